"""The forecasting task: metrics against independent numpy computations, the rules' exact outputs, original units
from a checkpoint, a rule without parameters under the Trainer, the forecast plot, the recipe and the table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import QUIET, quiet_trainer, run_benchmark

import zoo
from callbacks import ForecastPlotLogger
from datamodules import TimeSeriesDataModule
from recipes import forecast_sunspots

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


def _series(n: int = 120, seed: int = 0) -> np.ndarray:
    """Two positive targets with a cycle and noise, and one covariate; a few targets missing."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n)
    values = np.stack(
        [
            50 + 20 * np.sin(2 * np.pi * steps / 9) + rng.normal(0, 3, n),
            5 + np.cumsum(rng.normal(0, 0.5, n)) ** 2,
            rng.normal(0, 1, n),
        ],
        axis=1,
    )
    values[[70, 71, 100], 0] = np.nan
    return values


def _numpy_metrics(dm: TimeSeriesDataModule, forecast, scale=None, z: float = 0.0) -> dict[str, float]:
    """The test metrics of ``forecast(inputs_orig) -> (N, H, T)`` from the raw series, with numpy only."""
    data = _series()
    n_train, n_val_end, n = dm._data["bounds"][0]
    L, H, T = dm.input_size, dm.horizon, dm.out_features
    filled = data.copy()
    for t in range(1, n):  # forward fill, as the datamodule does for inputs
        filled[t] = np.where(np.isnan(filled[t]), filled[t - 1], filled[t])
    origins = [o for o in range(n_val_end, n - H + 1) if not np.isnan(data[o : o + H, :T]).all()]
    inputs = np.stack([filled[o - L : o] for o in origins])
    actual = np.stack([data[o : o + H, :T] for o in origins])
    preds = forecast(inputs)
    ok = ~np.isnan(actual)
    err = np.abs(preds - actual)
    naive_scale = np.nanmean(np.abs(np.diff(data[:n_train, :T], axis=0)), axis=0)
    out = {
        "test/mae": err[ok].mean(),
        "test/rmse": math.sqrt((err[ok] ** 2).mean()),
        "test/mape": (err[ok] / np.abs(actual[ok])).mean(),
        "test/smape": (2 * err[ok] / (np.abs(actual[ok]) + np.abs(preds[ok]))).mean(),
        "test/mase": np.mean([err[..., t][ok[..., t]].mean() / naive_scale[t] for t in range(T)]),
    }
    for h in range(H):
        out[f"test/mae_step{h + 1}"] = err[:, h][ok[:, h]].mean()
    if scale is not None:
        half = z * scale  # (H, T) in original units
        inside = (actual >= preds - half) & (actual <= preds + half)
        out["test/coverage"] = inside[ok].mean()
    return out


def _datamodule(**kwargs) -> TimeSeriesDataModule:
    kwargs = dict(series=_series(), target_columns=["x0", "x1"], covariate_columns=["x2"], input_size=12, **kwargs)
    dm = TimeSeriesDataModule(horizon=3, val_fraction=0.2, test_fraction=0.25, batch_size=7, **kwargs)
    dm.setup()
    return dm


def _linked(cls, dm: TimeSeriesDataModule, **kwargs):
    return cls(**{key: getattr(dm, key) for key in cls.data_links}, **kwargs)


def test_metrics_equal_numpy_on_masked_targets_in_original_units():
    dm = _datamodule()
    model = _linked(zoo.NaiveForecaster, dm)
    with torch.no_grad():
        model.log_scale.copy_(torch.tensor([[0.1, -0.3], [0.2, 0.0], [0.5, 0.4]]))
    metrics = quiet_trainer().test(model, datamodule=dm, verbose=False)[0]
    std = model.log_scale.detach().exp().numpy() * np.array(dm.target_std)
    z = 1.6448536269514722  # the 95% normal quantile: a central 90% interval
    expected = _numpy_metrics(dm, lambda x: np.repeat(x[:, -1:, :2], 3, axis=1), std, z)
    assert 0.3 < expected["test/coverage"] < 1  # some targets inside the intervals, some outside
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-4), key


def test_seasonal_naive_metrics_by_horizon_step_equal_numpy():
    dm = _datamodule(season_length=2)
    model = _linked(zoo.SeasonalNaiveForecaster, dm, distribution="none")
    assert model.hparams.season_length == 2 and not list(model.parameters())
    metrics = quiet_trainer().test(model, datamodule=dm, verbose=False)[0]
    expected = _numpy_metrics(dm, lambda x: x[:, [-2, -1, -2], :2])
    assert "test/coverage" not in metrics
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-4), key


def test_rules_forecast_exactly_their_rule():
    x = torch.randn(4, 10, 3)
    naive = zoo.NaiveForecaster(input_size=10, horizon=5, in_features=3, out_features=2)
    torch.testing.assert_close(naive(x), x[:, -1:, :2].expand(4, 5, 2))
    seasonal = zoo.SeasonalNaiveForecaster(season_length=3, input_size=10, horizon=5, in_features=3, out_features=2)
    torch.testing.assert_close(seasonal(x), x[:, [7, 8, 9, 7, 8], :2])  # t + h - 3 * ceil(h / 3)
    mean = zoo.WindowMeanForecaster(window=4, input_size=10, horizon=5, in_features=3, out_features=2)
    torch.testing.assert_close(mean(x), x[:, -4:, :2].mean(1, keepdim=True).expand(4, 5, 2))
    _, scale = naive.forecast(x)
    torch.testing.assert_close(scale, torch.ones(4, 5, 2))  # the learned standard deviation starts at 1
    with pytest.raises(ValueError, match=r"season_length must be in \[1, input_size=10\]"):
        zoo.SeasonalNaiveForecaster(season_length=11, input_size=10)


def test_rule_without_parameters_fits_by_evaluating_only():
    dm = _datamodule()
    model = _linked(zoo.NaiveForecaster, dm, distribution="none")
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(model, datamodule=dm)
    assert trainer.state.finished and "val/mae" in trainer.callback_metrics and not list(model.parameters())
    assert model.monitor == ("val/loss", "min")


def test_training_a_rule_fits_only_its_interval():
    dm = _datamodule()
    model = _linked(zoo.NaiveForecaster, dm, lr=0.05, weight_decay=0.0)
    before = quiet_trainer().test(model, datamodule=dm, verbose=False)[0]
    quiet_trainer(max_epochs=15).fit(model, datamodule=dm)
    after = quiet_trainer().test(model, datamodule=dm, verbose=False)[0]
    assert after["test/mae"] == before["test/mae"] and after["test/coverage"] != before["test/coverage"]
    # the maximum-likelihood scale of each step is the RMS of the training residuals
    batch = dm.datasets["train"].__getitems__(list(range(len(dm.datasets["train"]))))
    residual = (batch.targets - batch.inputs[:, -1:, :2]).masked_fill(~batch.observed, float("nan"))
    rms = residual.pow(2).nanmean(0).sqrt()
    torch.testing.assert_close(model.log_scale.exp().detach(), rms, rtol=0.1, atol=0.02)


@pytest.mark.parametrize("name", ["lstm_attn_forecast", "tcn_forecast", "nbeats_forecast", "transformer_forecast"])
def test_networks_with_a_gaussian_head_predict_in_original_units_from_a_checkpoint(name, tmp_path):
    dm = _datamodule()
    links = {key: getattr(dm, key) for key in zoo.Forecaster.data_links}
    model = zoo.create_model(name, distribution="gaussian", **links)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    restored = type(model).load_from_checkpoint(tmp_path / "model.ckpt", weights_only=True)
    assert restored.hparams.target_mean == dm.target_mean and restored.hparams.mase_scale == dm.mase_scale
    outputs = quiet_trainer().predict(restored, dm.test_dataloader())
    forecast = torch.cat([out["forecast"] for out in outputs])
    batch = dm.datasets["test"].__getitems__(list(range(len(dm.datasets["test"]))))
    model.eval()
    with torch.no_grad():
        expected = dm.inverse_transform(model(batch.inputs))
    assert forecast.shape == (len(dm.datasets["test"]), 3, 2)
    torch.testing.assert_close(forecast, expected)
    lower, upper = torch.cat([out["lower"] for out in outputs]), torch.cat([out["upper"] for out in outputs])
    assert (lower < forecast).all() and (forecast < upper).all()
    metrics = quiet_trainer().test(restored, datamodule=dm, verbose=False)[0]
    assert 0 <= metrics["test/coverage"] <= 1 and math.isfinite(metrics["test/mase"])


def test_forecast_plot_is_logged_as_an_image(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dm = _datamodule()
    logger = TensorBoardLogger(tmp_path, name="plot")
    model = _linked(zoo.NaiveForecaster, dm)
    plot = ForecastPlotLogger(every_n_epochs=1)
    quiet_trainer(logger=logger, max_epochs=1, callbacks=[plot]).fit(model, datamodule=dm)
    quiet_trainer(logger=logger, callbacks=[plot]).test(model, datamodule=dm, verbose=False)
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert {"val/forecast", "test/forecast"} <= set(events.Tags()["images"])
    image = events.Images("test/forecast")[0]
    assert image.width > 300 and image.height > 100


def test_wrong_sizes_and_arguments_are_named():
    model = zoo.MLPForecaster(input_size=12, horizon=3, in_features=2, out_features=1)
    with pytest.raises(ValueError, match=r"expects float features of shape \(B, T, 2\) with T = input_size = 12"):
        model(torch.randn(2, 10, 2))
    with pytest.raises(ValueError, match=r"target_std needs one value per target \(2\)"):
        zoo.NaiveForecaster(out_features=2, in_features=2, target_std=[1.0])
    with pytest.raises(ValueError, match="Unknown distribution"):
        zoo.TCNForecaster(distribution="student")


def test_recipe_runs_with_no_argument_and_monitors_val_mae():
    cli = forecast_sunspots.main(["fit", "--trainer.fast_dev_run=2", *QUIET])
    model, dm = cli.model, cli.datamodule
    assert (
        isinstance(model, zoo.MLPForecaster) and model.hparams.distribution == "gaussian" and model.hparams.window_norm
    )
    assert (model.input_size, model.horizon, model.in_features) == (32, 8, 1)
    assert model.hparams.target_mean == dm.target_mean and model.hparams.mase_scale == dm.mase_scale
    stops = [cb for cb in cli.trainer.callbacks if type(cb).__name__ == "EarlyStopping"]
    assert (cli.trainer.checkpoint_callback.monitor, cli.trainer.checkpoint_callback.mode) == ("val/mae", "min")
    assert [(cb.monitor, cb.mode) for cb in stops] == [("val/mae", "min")]
    assert {"test/mae", "test/mase", "test/coverage", "test/mae_step1"} <= set(cli.trainer.callback_metrics)


def test_recipe_takes_a_rule_and_links_the_season():
    cli = forecast_sunspots.main(["fit", "--trainer.fast_dev_run=1", "--model=zoo.SeasonalNaiveForecaster", *QUIET])
    assert cli.model.hparams.season_length == 11 and cli.trainer.checkpoint_callback.monitor == "val/loss"


def test_comparison_table_runs_every_model_on_one_split(tmp_path):
    out = tmp_path / "table.json"
    args = ["--fast_dev_run", "--models=seasonal_naive_forecast,nbeats_forecast", f"--out={out}", "--logs="]
    finished = run_benchmark("forecast_table", *args, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [row["model"] for row in report["rows"]] == ["seasonal_naive_forecast", "nbeats_forecast"]
    assert report["windows"] == {"train": 178, "val": 39, "test": 39}
    assert "| seasonal_naive_forecast | 8 |" in finished.stdout
    assert report["summary"][0]["seeds"] == 1 and report["window_norm"]
