"""NullProfiler: training under it is the same training, and profiling stays available."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from callbacks import NullProfiler


def _weights_after_fit(profiler) -> list[torch.Tensor]:
    L.seed_everything(0)
    model = torch.nn.Linear(4, 2)

    class Task(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = DataLoader(TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,))), batch_size=4, shuffle=True)
    trainer = L.Trainer(max_epochs=2, profiler=profiler, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(Task(), data)
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
