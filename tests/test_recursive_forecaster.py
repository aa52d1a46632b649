"""The recursive LSTM forecaster: its rollout iterates its own one-step map (checked on weights whose map is known),
the horizon is not in its weights, forecasts in original units from a checkpoint, the recipe and the table's label."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import QUIET, quiet_trainer, run_benchmark

import zoo
from datamodules import TimeSeriesDataModule
from recipes import forecast_sunspots

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


def _known_map(model: zoo.RecursiveLSTMForecaster, w: list[float], a: float, b: float) -> None:
    """One LSTM unit whose step is ``h = tanh(tanh(w . x))`` (input and output gates open, forget gate shut, no
    recurrence), and a head ``a h + b``: the one-step forecast is ``g(x) = a tanh(tanh(w . x)) + b``."""
    rnn = model.encoder.rnn
    with torch.no_grad():
        for param in rnn.parameters():
            param.zero_()
        rnn.weight_ih_l0[2] = torch.tensor(w)  # gate order i, f, g, o: the cell input
        rnn.bias_ih_l0.copy_(torch.tensor([40.0, -40.0, 0.0, 40.0]))  # sigmoid(40) = 1, sigmoid(-40) = 4e-18
        model.head.linear.weight.fill_(a)
        model.head.linear.bias.fill_(b)


def test_the_rollout_iterates_the_one_step_map_on_its_own_forecasts():
    model = zoo.RecursiveLSTMForecaster(input_size=6, horizon=5, hidden_size=1, num_layers=1).eval()
    _known_map(model, [0.8], a=1.5, b=0.2)
    x = torch.randn(3, 6, 1)
    expected, value = [], x[:, -1, 0].double()
    for _ in range(5):
        value = 1.5 * torch.tanh(torch.tanh(0.8 * value)) + 0.2  # g(previous forecast)
        expected.append(value)
    with torch.no_grad():
        forecast = model(x)  # (B, H, T)
    torch.testing.assert_close(forecast[..., 0].double(), torch.stack(expected, 1), atol=1e-6, rtol=0)


def test_covariates_are_held_at_their_last_value_during_the_rollout():
    model = zoo.RecursiveLSTMForecaster(
        input_size=4, horizon=3, in_features=2, out_features=1, hidden_size=1, num_layers=1
    )
    model.eval()
    _known_map(model, [0.5, -0.7], a=1.0, b=0.0)
    x = torch.randn(2, 4, 2)
    value, covariate, expected = x[:, -1, 0].double(), x[:, -1, 1].double(), []
    for _ in range(3):
        value = torch.tanh(torch.tanh(0.5 * value - 0.7 * covariate))
        expected.append(value)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[..., 0].double(), torch.stack(expected, 1), atol=1e-6, rtol=0)


def test_the_horizon_is_not_in_the_weights():
    torch.manual_seed(0)
    long = zoo.create_model("lstm_recursive_forecast", horizon=8, distribution="gaussian").eval()
    short = zoo.create_model("lstm_recursive_forecast", horizon=3, distribution="gaussian").eval()
    short.load_state_dict(long.state_dict())
    x = torch.randn(4, 32, 1)
    with torch.no_grad():
        (loc_long, scale_long), (loc_short, scale_short) = long.forecast(x), short.forecast(x)
    torch.testing.assert_close(loc_short, loc_long[:, :3])
    torch.testing.assert_close(scale_short, scale_long[:, :3])


def test_training_backpropagates_through_the_fed_back_forecasts():
    """The last step's gradient with respect to the head's bias is that of the iterated map (1 + chain terms), not
    the 1 a detached feedback would give."""
    model = zoo.RecursiveLSTMForecaster(input_size=5, horizon=4, hidden_size=1, num_layers=1)
    _known_map(model, [0.9], a=1.2, b=0.1)
    x = torch.randn(1, 5, 1)
    model.forecast(x)[0][0, -1, 0].backward()
    bias = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    value = x[0, -1, 0].double()
    for _ in range(4):
        value = 1.2 * torch.tanh(torch.tanh(0.9 * value)) + bias
    (expected,) = torch.autograd.grad(value, bias)
    assert expected > 1.5  # the chain through three fed-back forecasts
    assert model.head.linear.bias.grad.item() == pytest.approx(expected.item(), rel=1e-5)


def _series(n: int = 150) -> np.ndarray:
    steps = np.arange(n)
    return 40 + 25 * np.sin(2 * np.pi * steps / 11) + np.random.default_rng(0).normal(0, 2, n)


def test_forecasts_in_original_units_from_a_checkpoint(tmp_path):
    dm = TimeSeriesDataModule(series=_series(), input_size=16, horizon=4, val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    links = {key: getattr(dm, key) for key in zoo.Forecaster.data_links}
    model = zoo.create_model("lstm_recursive_forecast", distribution="gaussian", hidden_size=16, **links)
    trainer = quiet_trainer(max_epochs=2, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    restored = zoo.RecursiveLSTMForecaster.load_from_checkpoint(tmp_path / "model.ckpt", weights_only=True)
    outputs = quiet_trainer().predict(restored, dm.test_dataloader())
    forecast = torch.cat([out["forecast"] for out in outputs])
    batch = dm.datasets["test"].__getitems__(list(range(len(dm.datasets["test"]))))
    model.eval()
    with torch.no_grad():
        expected = dm.inverse_transform(model(batch.inputs))
    assert forecast.shape == (len(dm.datasets["test"]), 4, 1) and forecast.mean() > 10  # sunspot-like units
    torch.testing.assert_close(forecast, expected)
    lower, upper = torch.cat([out["lower"] for out in outputs]), torch.cat([out["upper"] for out in outputs])
    assert (lower < forecast).all() and (forecast < upper).all()
    metrics = quiet_trainer().test(restored, datamodule=dm, verbose=False)[0]
    assert math.isfinite(metrics["test/mase"]) and "test/mae_step4" in metrics


def test_sunspots_recipe_takes_the_recursive_model():
    cli = forecast_sunspots.main(["fit", "--trainer.fast_dev_run=1", "--model=zoo.RecursiveLSTMForecaster", *QUIET])
    model = cli.model
    assert isinstance(model, zoo.RecursiveLSTMForecaster) and (model.input_size, model.horizon) == (32, 8)
    assert model.hparams.target_mean == cli.datamodule.target_mean
    assert {"test/mae", "test/mase", "test/mae_step8"} <= set(cli.trainer.callback_metrics)


def _forecast_table():
    spec = importlib.util.spec_from_file_location("forecast_table", REPO / "benchmarks" / "forecast_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_comparison_table_says_direct_recursive_or_rule():
    table = _forecast_table()
    assert "lstm_recursive_forecast" in table.available_models()
    labels = {name: table.strategy(zoo.create_model(name)) for name in table.available_models()}
    assert labels["lstm_recursive_forecast"] == "recursive" and labels["lstm_attn_forecast"] == "direct"
    assert {labels[name] for name in table.RULES} == {"rule"}
    row = {key: 1.0 for key in (*table.TEST_METRICS, "epochs", "total_s", "mae_last_step")}
    row.update(model="lstm_recursive_forecast", strategy="recursive", params=50_562, seeds=1)
    assert "| lstm_recursive_forecast | 50,562 | recursive | 1.00 |" in table.format_table([row], horizon=8)


@pytest.mark.slow
def test_comparison_table_runs_direct_and_recursive(tmp_path):
    out = tmp_path / "table.json"
    args = ["--fast_dev_run", "--models=lstm_attn_forecast,lstm_recursive_forecast", f"--out={out}", "--logs="]
    finished = run_benchmark("forecast_table", *args, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(row["model"], row["strategy"]) for row in rows] == [
        ("lstm_attn_forecast", "direct"),
        ("lstm_recursive_forecast", "recursive"),
    ]
    assert "| lstm_recursive_forecast | 50,562 | recursive |" in finished.stdout  # a Gaussian head: 2 outputs a step
