"""Lightning's StochasticWeightAveraging with the BatchNorm-update epoch fixed.

Checked against lightning 2.6.6: for a model with BatchNorm, Lightning's SWA copies the averaged weights into the
module and runs one extra epoch of forward passes to recompute the BatchNorm statistics, with backward skipped. But
the optimizer still steps at the end of that epoch, and nothing cleared the gradients of the last real training step:
the final weights become ``average - lr * stale_gradient``, no longer the average, and the BatchNorm statistics no
longer match them (``tests/test_callbacks_averaging.py`` shows both). Clearing the gradients when that epoch starts
makes the step a no-op. ``EMAWeightAveraging`` and ``WeightAveraging`` need no change.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import StochasticWeightAveraging as _LightningSWA
from typing_extensions import override


class StochasticWeightAveraging(_LightningSWA):
    """Drop-in for ``lightning.pytorch.callbacks.StochasticWeightAveraging``; same arguments.

    After fit, the module holds exactly the mean of the weights at the start of each SWA epoch, and BatchNorm
    statistics computed for those weights over the training data.

    Example:
        >>> StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=0.75)  # doctest: +ELLIPSIS
        <...StochasticWeightAveraging object at ...>
    """

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if self.pl_module_contains_batch_norm(pl_module) and trainer.current_epoch == self.swa_end + 1:
            # The BatchNorm-update epoch: gradients set to None make its single optimizer step skip every parameter.
            for optimizer in trainer.optimizers:
                optimizer.zero_grad(set_to_none=True)
