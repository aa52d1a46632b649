"""Lightning's ``ModelPruning`` driven by a sparsity schedule and restricted to chosen layer types, from a config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelPruning
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from typing_extensions import override


class ScheduledPruning(ModelPruning):
    """``ModelPruning`` that follows a sparsity schedule, on the layer types named (all in a YAML file).

    ``ModelPruning`` takes an ``amount`` per epoch, a fraction of the weights *still unpruned*, and by default every
    module with a ``weight`` (normalization layers and the classifier included), neither of which a config file can
    express well. Here ``sparsity`` maps an epoch to the fraction of the selected weights (of channels, for
    structured pruning) that is zero from the start of that epoch on; each step prunes what the masks in place lack,
    so a run resumed without masks (checkpoints hold none) re-prunes to its target, the zeroed weights first.
    Pruning happens before an epoch's training, not after its validation as in ``ModelPruning``, so that every
    checkpoint holds the weights its validation score belongs to.

    Checkpoints hold the pruned weights as plain tensors (``make_pruning_permanent``: no masks or ``_orig``
    copies), so they load into the unpruned model with ``weights_only=True``. The best-``val/acc`` checkpoint can
    come from an epoch before the final sparsity; a warning says so at the end of training.

    Args:
        sparsity: ``{epoch: fraction of zeros from that epoch on}``, non-decreasing, each in ``[0, 1)``.
        pruning_fn: a ``torch.nn.utils.prune`` name (``"l1_unstructured"``, ``"ln_structured"``, ...).
        layer_types: ``torch.nn`` class names of the modules to prune (``["Conv2d"]``); ``None``: every module.
        parameter_names: parameters to prune in each module (``"weight"``, ``"bias"``).
        use_global_unstructured: one magnitude threshold over all selected tensors (unstructured methods only).
        pruning_dim: the dimension whose slices structured pruning removes (0: a conv's output channels).
        pruning_norm: the norm of ``ln_structured`` (1, 2, ...).
        make_pruning_permanent: write the masked weights into the parameters at the end of training.
        use_lottery_ticket_hypothesis: reset the surviving weights to their values at the start after each pruning.
        verbose: 1 logs the overall sparsity after each pruning, 2 that of each tensor too.

    Example:
        >>> ScheduledPruning({0: 0.5, 1: 0.8}, layer_types=["Conv2d", "Linear"])  # doctest: +ELLIPSIS
        <...ScheduledPruning object at ...>
    """

    def __init__(
        self,
        sparsity: Mapping[int, float],
        pruning_fn: str = "l1_unstructured",
        layer_types: Sequence[str] | None = None,
        parameter_names: Sequence[str] = ("weight",),
        use_global_unstructured: bool = True,
        pruning_dim: int | None = None,
        pruning_norm: int | None = None,
        make_pruning_permanent: bool = True,
        use_lottery_ticket_hypothesis: bool = False,
        verbose: int = 0,
    ) -> None:
        schedule = {int(epoch): float(value) for epoch, value in dict(sparsity).items()}
        if not schedule:
            raise ValueError("`sparsity` needs at least one {epoch: fraction} entry")
        if any(epoch < 0 for epoch in schedule) or not all(0 <= value < 1 for value in schedule.values()):
            raise ValueError(f"`sparsity` needs epochs >= 0 and fractions in [0, 1), got {schedule}")
        values = [schedule[epoch] for epoch in sorted(schedule)]
        if values != sorted(values):
            raise ValueError(f"`sparsity` must not decrease from one epoch to the next (pruning is final): {schedule}")
        self.schedule = dict(sorted(schedule.items()))
        self.layer_types = None if layer_types is None else tuple(_nn_class(name) for name in layer_types)
        super().__init__(
            pruning_fn=pruning_fn,
            parameter_names=list(parameter_names),
            use_global_unstructured=use_global_unstructured and not pruning_fn.endswith("_structured"),
            amount=0.0,  # unused: pruning steps come from `sparsity`, applied in on_train_epoch_start
            make_pruning_permanent=make_pruning_permanent,
            use_lottery_ticket_hypothesis=use_lottery_ticket_hypothesis,
            pruning_dim=pruning_dim,
            pruning_norm=pruning_norm,
            verbose=verbose,
        )
        self._applied = 0.0  # the target of the last pruning step of this process
        self._best = ("", None)  # the best checkpoint's path and epoch, as last saved

    @override
    def filter_parameters_to_prune(self, parameters_to_prune: Sequence[tuple[nn.Module, str]] = ()) -> Any:
        if self.layer_types is None:
            return parameters_to_prune
        kept = [(module, name) for module, name in parameters_to_prune if isinstance(module, self.layer_types)]
        if not kept:
            names = ", ".join(cls.__name__ for cls in self.layer_types)
            raise ValueError(f"ScheduledPruning found no {names} module with a parameter {self._parameter_names}")
        return kept

    def sparsity(self) -> float:
        """The fraction of the selected weights zeroed by the masks now in place (0 before the first pruning)."""
        zeros = total = 0
        for module, name in self._parameters_to_prune:
            mask = getattr(module, f"{name}_mask", None)
            numel = getattr(module, name).numel()
            zeros += 0 if mask is None else int((mask == 0).sum())
            total += numel
        return zeros / max(total, 1)

    def target(self, epoch: int) -> float:
        """The sparsity the schedule asks for while training epoch ``epoch`` (that of the latest entry up to it)."""
        return max((value for start, value in self.schedule.items() if start <= epoch), default=0.0)

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        last = max(self.schedule)
        if stage == "fit" and trainer.max_epochs is not None and 0 <= trainer.max_epochs - 1 < last:
            rank_zero_warn(
                f"ScheduledPruning has a step at epoch {last}, but training stops after epoch "
                f"{trainer.max_epochs - 1}: the final sparsity {self.schedule[last]} is never reached."
            )

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before the epoch's training rather than after its validation (ModelPruning's default): a checkpoint then
        # holds the very weights its validation score was measured on.
        target = self.target(trainer.current_epoch)
        if target <= self._applied:
            return
        current = self.sparsity()  # below the last target only after a resume (checkpoints hold no masks)
        if target > current:
            self.apply_pruning((target - current) / (1 - current))  # ModelPruning's amount: of the unpruned rest
            if self._use_lottery_ticket_hypothesis:
                self.apply_lottery_ticket_hypothesis()
        self._applied = target

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("pruning/sparsity", self.sparsity(), on_epoch=True)

    @override
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        # ModelCheckpoint names its new best file before writing it: a save under a new best path is that file.
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if best and best != self._best[0]:
            self._best = (best, checkpoint.get("epoch"))

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        best, epoch = self._best
        final = min(start for start, value in self.schedule.items() if value == max(self.schedule.values()))
        if best and epoch is not None and trainer.is_global_zero and epoch < final:
            rank_zero_warn(
                f"The best checkpoint {best} (epoch {epoch}) predates the final sparsity (from epoch {final} "
                "on); last.ckpt holds the pruned model."
            )
        super().on_train_end(trainer, pl_module)


def _nn_class(name: str) -> type[nn.Module]:
    cls = getattr(nn, name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"layer_types: {name!r} is not a torch.nn module class (e.g. 'Conv2d', 'Linear')")
    return cls
