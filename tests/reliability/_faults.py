"""Faults injected into recipe runs from the command line (``--trainer.callbacks+=_faults.<Name>``)."""

from __future__ import annotations

import os
import signal

import lightning as L
import torch


class PoisonBatch(L.Callback):
    """Make the training set return NaN in the first input of its ``batch``-th batch (counted over the run).

    The dataset itself is wrapped, so the NaN arrives the way corrupt data does: before any hook sees the batch.
    """

    def __init__(self, batch: int = 5) -> None:
        self.batch = batch

    def on_train_start(self, trainer, pl_module):
        dataset = trainer.train_dataloader.dataset
        fetch, calls = dataset.__getitems__, iter(range(10**9))

        def poisoned(indices):
            inputs, targets = fetch(indices)
            if next(calls) == self.batch:
                inputs = inputs.clone()
                inputs.view(-1)[0] = float("nan")
            return inputs, targets

        dataset.__getitems__ = poisoned


class PoisonWeights(L.Callback):
    """Write NaN into the first parameter after optimizer step ``step`` (as an overflowing update would)."""

    def __init__(self, step: int = 5) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


class KillAt(L.Callback):
    """SIGKILL this process as the batch after optimizer step ``step`` starts: every checkpoint of that step (and
    of the epoch end, when ``step`` closes an epoch) is written by then."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
