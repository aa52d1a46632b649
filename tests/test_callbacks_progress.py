import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar as LightningRichProgressBar
from torch.utils.data import DataLoader, TensorDataset

from callbacks import RichProgressBar


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _count_metric_updates(bar_cls: type, refresh_rate: int) -> int:
    calls = []

    class Counting(bar_cls):
        def _update_metrics(self, trainer, pl_module):
            calls.append(trainer.global_step)
            super()._update_metrics(trainer, pl_module)

    data = DataLoader(TensorDataset(torch.randn(46, 4), torch.randint(0, 2, (46,))), batch_size=2)  # 23 batches
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, callbacks=[Counting(refresh_rate)])
    trainer.fit(_Tiny(), data)
    return len(calls)


def test_progress_bar_redraws_every_refresh_rate_batches_and_the_last():
    assert _count_metric_updates(RichProgressBar, refresh_rate=5) == 23 // 5 + 1 + 1  # + last batch + epoch end
    assert _count_metric_updates(LightningRichProgressBar, refresh_rate=5) == 23 + 1  # Lightning: every batch
