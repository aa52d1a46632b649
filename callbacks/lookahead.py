"""Lookahead weight averaging as a callback: slow weights that follow the trained ones and are written back.

Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back") keeps a slow copy of the weights;
every ``k`` optimizer steps the slow copy moves toward the fast weights and the fast weights restart from it. Here
the slow copy moves by ``1 - rho``, with ``rho`` growing over the run as in the CIFAR-10 speedruns (Jordan 2024):
``rho = decay ** k * progress ** decay_power``, so the averaging is weak early (the weights move fast) and strong at
the end. Unlike an EMA kept beside the model (Lightning's ``EMAWeightAveraging``), training continues from the
averaged weights, and the BatchNorm running statistics are averaged too.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class Lookahead(Callback):
    """Every ``every_n_steps`` optimizer steps after ``start_fraction`` of the run: ``slow += (1 - rho) * (fast -
    slow)``, then ``fast = slow``; at each epoch's end the model takes the slow weights.

    ``rho = decay ** every_n_steps * progress ** decay_power``, ``progress`` being the step over the run's total
    (``trainer.estimated_stepping_batches``). The slow weights are every floating-point tensor of the state dict
    (BatchNorm running statistics included) and are saved in checkpoints, so a resumed run continues them.

    Args:
        every_n_steps: optimizer steps between updates (Lookahead's ``k``).
        decay: per-step decay of the slow weights at the end of the run.
        decay_power: how late the decay grows (0: constant).
        start_fraction: the fraction of the run's steps after which the slow weights start.
    """

    def __init__(
        self, every_n_steps: int = 5, decay: float = 0.95, decay_power: float = 3.0, start_fraction: float = 0.3
    ) -> None:
        if every_n_steps < 1 or not 0 <= decay < 1 or decay_power < 0 or not 0 <= start_fraction < 1:
            raise ValueError(
                "need every_n_steps >= 1, decay in [0, 1), decay_power >= 0 and start_fraction in [0, 1); got "
                f"{every_n_steps}, {decay}, {decay_power}, {start_fraction}"
            )
        self.every_n_steps, self.decay, self.decay_power = every_n_steps, decay, decay_power
        self.start_fraction = start_fraction
        self.slow: dict[str, torch.Tensor] | None = None
        self._last_step = -1

    def _fast(self, pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        return {key: value for key, value in pl_module.state_dict().items() if value.is_floating_point()}

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step  # optimizer steps taken
        total = max(1, int(trainer.estimated_stepping_batches))
        if step == self._last_step or step % self.every_n_steps or step < self.start_fraction * total:
            return  # (the same step again under gradient accumulation)
        self._last_step = step
        fast = self._fast(pl_module)
        if self.slow is None:
            self.slow = {key: value.detach().clone() for key, value in fast.items()}
            return
        rho = self.decay**self.every_n_steps * min(1.0, step / total) ** self.decay_power
        for key, value in fast.items():
            slow = self.slow[key] = self.slow[key].to(value.device)  # (a checkpoint's load on the CPU)
            slow.lerp_(value, 1 - rho)
            value.copy_(slow)

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.slow is not None:
            for key, value in self._fast(pl_module).items():
                value.copy_(self.slow[key])

    def state_dict(self) -> dict[str, Any]:
        return {"slow": self.slow, "last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.slow, self._last_step = state_dict.get("slow"), state_dict.get("last_step", -1)
