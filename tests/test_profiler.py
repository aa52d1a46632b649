"""NullProfiler: training under it is the same training, and profiling stays available."""

import lightning as L
import pytest
import torch
from conftest import quiet_trainer
from lightning.pytorch.demos.boring_classes import BoringModel

from callbacks import NullProfiler


def _weights_after_fit(profiler) -> list[torch.Tensor]:
    L.seed_everything(0)
    model = BoringModel()
    trainer = quiet_trainer(max_epochs=2, limit_train_batches=8, limit_val_batches=0, profiler=profiler)
    trainer.fit(model)
    assert trainer.global_step == 16
    return [p.detach().clone() for p in model.parameters()]


def test_training_under_the_null_profiler_is_unchanged():
    for ours, default in zip(_weights_after_fit(NullProfiler()), _weights_after_fit(None), strict=True):
        torch.testing.assert_close(ours, default, rtol=0, atol=0)


def test_the_null_context_nests_and_lets_errors_through():
    profiler = NullProfiler()
    with profiler.profile("outer"), profiler.profile("inner"):
        pass
    with pytest.raises(KeyError, match="kept"), profiler.profile("failing"):
        raise KeyError("kept")
