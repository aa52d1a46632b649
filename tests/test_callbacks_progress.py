"""RichProgressBar: Lightning's, redrawn every ``refresh_rate`` batches rather than on every one."""

from conftest import quiet_trainer
from lightning.pytorch.callbacks import RichProgressBar as LightningRichProgressBar
from lightning.pytorch.demos.boring_classes import BoringModel

from callbacks import RichProgressBar


def _count_metric_updates(bar_cls: type, refresh_rate: int) -> int:
    calls = []

    class Counting(bar_cls):
        def _update_metrics(self, trainer, pl_module):
            calls.append(trainer.global_step)
            super()._update_metrics(trainer, pl_module)

    trainer = quiet_trainer(
        max_epochs=1,
        limit_train_batches=23,
        limit_val_batches=0,
        enable_progress_bar=True,
        callbacks=[Counting(refresh_rate)],
    )
    trainer.fit(BoringModel())
    return len(calls)


def test_progress_bar_redraws_every_refresh_rate_batches_and_the_last():
    assert _count_metric_updates(RichProgressBar, refresh_rate=5) == 23 // 5 + 1 + 1  # + last batch + epoch end
    assert _count_metric_updates(LightningRichProgressBar, refresh_rate=5) == 23 + 1  # Lightning: every batch
