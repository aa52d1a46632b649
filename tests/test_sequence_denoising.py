"""Sequence denoising: the generated data and its statistics, per-step outputs over padded batches, logged metrics
against an independent computation over each sequence alone, a short run beating the noisy input, the recipe."""

from __future__ import annotations

import pytest
import torch
from conftest import QUIET, quiet_trainer

import zoo
from datamodules import NoisySinesDataModule
from recipes import sequence_denoise_bilstm

pytestmark = pytest.mark.usefixtures("one_thread")


def _datamodule(**kwargs) -> NoisySinesDataModule:
    sizes = dict(num_train=400, num_val=64, num_test=64, min_length=8, max_length=24, batch_size=16)
    return NoisySinesDataModule(**{**sizes, **kwargs})


def _whole(dm: NoisySinesDataModule, split: str):
    dataset = dm.datasets[split]
    return dataset.__getitems__(list(range(len(dataset))))


def _linked(dm: NoisySinesDataModule, name: str = "bilstm_denoiser", **kwargs) -> zoo.RNNRegressor:
    return zoo.create_model(name, **{key: getattr(dm, key) for key in zoo.SequenceRegressor.data_links}, **kwargs)


def test_data_statistics_lengths_and_noise():
    dm = _datamodule(noise_std=0.25)
    noisy, targets, lengths = _whole(dm, "train")
    assert noisy.shape == targets.shape == (400, 24, 1) and lengths.min() == 8 and lengths.max() == 24
    valid = torch.arange(24) < lengths.unsqueeze(1)
    assert (noisy[~valid] == 0).all() and (targets[~valid] == 0).all()  # padded steps
    x = noisy[valid]
    assert dm.feature_mean[0] == pytest.approx(x.mean().item(), abs=1e-6)
    assert dm.feature_std[0] == pytest.approx(x.std(correction=0).item(), rel=1e-5)
    assert targets[valid].mean().item() == pytest.approx(0, abs=1e-5)  # standardized with the training statistics
    assert targets[valid].std(correction=0).item() == pytest.approx(1, rel=1e-4)
    clean = targets[valid] * dm.target_std[0] + dm.target_mean[0]
    assert (x - clean).std().item() == pytest.approx(0.25, rel=0.05)
    assert clean.abs().max() <= 3.0  # three components of amplitude at most 1
    test_noisy, _, test_lengths = _whole(dm, "test")
    assert len(test_lengths) == 64 and not torch.equal(test_noisy[:, :8], noisy[:64, :8])


def test_outputs_have_the_input_length_and_padding_changes_no_valid_step():
    model = zoo.create_model("bilstm_denoiser").eval()
    lengths = torch.tensor([20, 13, 5])
    x = torch.randn(3, 20, 1).masked_fill((torch.arange(20) >= lengths.unsqueeze(1)).unsqueeze(-1), 0.0)
    with torch.no_grad():
        out = model(x, lengths)
        assert out.shape == (3, 20, 1) and model(x).shape == (3, 20, 1)
        for index, length in enumerate(lengths.tolist()):
            alone = model(x[index : index + 1, :length])
            torch.testing.assert_close(out[index : index + 1, :length], alone, atol=1e-5, rtol=1e-5)


def test_logged_metrics_equal_an_independent_computation_over_each_sequence_alone():
    torch.manual_seed(0)
    dm = _datamodule()
    model = _linked(dm, hidden_size=8, num_layers=1)
    quiet_trainer(max_epochs=1, limit_train_batches=5).fit(model, datamodule=dm)  # not the initial weights
    metrics = quiet_trainer().validate(model, datamodule=dm, verbose=False)[0]
    noisy, targets, lengths = _whole(dm, "val")
    model.eval()
    preds, clean, inputs = [], [], []
    with torch.no_grad():
        for x, y, length in zip(noisy, targets, lengths.tolist(), strict=True):
            preds.append(model(x[None, :length])[0, :, 0])  # original units, the sequence without padding
            clean.append(y[:length, 0] * dm.target_std[0] + dm.target_mean[0])
            inputs.append(x[:length, 0])
    preds, clean, inputs = torch.cat(preds).double(), torch.cat(clean).double(), torch.cat(inputs).double()
    expected = {
        "val/mse": ((preds - clean) ** 2).mean(),
        "val/mae": (preds - clean).abs().mean(),
        "val/mse_input": ((inputs - clean) ** 2).mean(),
        "val/r2": 1 - ((preds - clean) ** 2).sum() / ((clean - clean.mean()) ** 2).sum(),
    }
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value.item(), rel=1e-4, abs=1e-6), key
    assert metrics["val/mse_input"] == pytest.approx(0.09, rel=0.15)  # noise std 0.3


def test_a_short_run_beats_the_noisy_input():
    torch.manual_seed(0)
    dm = _datamodule(num_train=500, max_length=32)
    model = _linked(dm, lr=1e-2)
    quiet_trainer(max_epochs=2, gradient_clip_val=1.0).fit(model, datamodule=dm)
    metrics = quiet_trainer().test(model, datamodule=dm, verbose=False)[0]
    assert metrics["test/mse"] < 0.6 * metrics["test/mse_input"], metrics  # 0.033 against 0.089 here


def test_wrong_targets_and_lengths_are_named():
    model = zoo.create_model("bilstm_denoiser")
    x = torch.randn(2, 10, 1)
    with pytest.raises(ValueError, match=r"targets must have shape \(2, 10, 1\)"):
        model.batch_loss((x, torch.randn(2, 10), torch.tensor([10, 4])))
    with pytest.raises(ValueError, match=r"every length must be in \[1, T=10\]"):
        model(x, torch.tensor([11, 4]))
    with pytest.raises(ValueError, match="at most max_length=64 steps"):
        model(torch.randn(1, 65, 1))


def test_recipe_links_the_data_and_logs_the_baseline():
    cli = sequence_denoise_bilstm.main(["fit", "--trainer.fast_dev_run=2", *QUIET])
    model, dm = cli.model, cli.datamodule
    assert isinstance(model, zoo.RNNRegressor) and model.hparams.bidirectional and model.max_length == 64
    assert model.hparams.feature_std == dm.feature_std and model.hparams.target_mean == dm.target_mean
    assert sum(p.numel() for p in model.parameters()) == zoo.model_info("bilstm_denoiser").num_params
    assert cli.trainer.checkpoint_callback.monitor == "val/mae"
    assert {"test/mse", "test/mae", "test/mse_input"} <= set(cli.trainer.callback_metrics)
    batch = next(iter(dm.test_dataloader()))
    out = model.predict_batch(batch)
    assert out.shape == batch.inputs.shape
