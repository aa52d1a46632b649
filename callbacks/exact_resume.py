"""What Lightning's checkpoints leave out for an exact resume: the random generators and the loader's position."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.types import _Stateful
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override


class ExactResume(Callback):
    """Save the random generators' states and the training loader's position in checkpoints; restore both on resume.

    Lightning's checkpoints hold no RNG state, so a resumed run draws other dropout masks, augmentations and
    shuffles than the run it continues, and Lightning hands a resumable loader its position only when it made no
    loader before the checkpoint was loaded (a schedule that asks for ``estimated_stepping_batches`` makes one).
    This callback stores the torch CPU and CUDA generators, NumPy's global generator and Python's ``random`` (as
    tensors and tuples, so a weights-only checkpoint read accepts them) and the training loader's ``state_dict``
    (:class:`datamodules.ResumableLoader`: the epoch's shuffle seed and batches seen), and puts them back before the
    first batch. A resumed single-process run then continues bit for bit, from an epoch boundary or from a
    checkpoint written inside an epoch (``ModelCheckpoint(every_n_train_steps=...)``).

    Not exact, with a warning when a run resumes: under DDP (only rank 0's states reach the checkpoint, so none are
    restored) and with loader workers (``num_workers > 0``), whose generators no checkpoint holds. A resume that
    trains nothing, because the checkpoint already reached ``max_epochs`` or ``max_steps``, warns too (Lightning ends
    such a fit without a word).

    Example:
        >>> ExactResume()  # doctest: +ELLIPSIS
        <...ExactResume object at ...>
    """

    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None
        self._restored = False
        self._loader_state: dict[str, Any] | None = None
        self._trained = False

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    @override
    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        version, python_state, gauss_next = random.getstate()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
            "python": (version, python_state, gauss_next),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        loader = _train_loader(self._trainer)
        if isinstance(loader, _Stateful):
            state["train_loader"] = loader.state_dict()
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed and torch.distributed.get_world_size() > 1:
            rank_zero_warn(
                "ExactResume: the checkpoint holds rank 0's random states only; under DDP each rank keeps its own, "
                "so this resumed run will not draw exactly what the interrupted one would have."
            )
            return
        # Restored now, before the loops and loaders are set up: nothing draws from the generators until training.
        torch.set_rng_state(state_dict["torch"])
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        version, python_state, gauss_next = state_dict["python"]
        random.setstate((version, tuple(python_state), gauss_next))
        if "cuda" in state_dict and torch.cuda.is_available():
            states = state_dict["cuda"]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
            else:
                rank_zero_warn(
                    f"ExactResume: the checkpoint holds {len(states)} CUDA generator states but this machine has "
                    f"{torch.cuda.device_count()} devices; CUDA random states were not restored."
                )
        self._loader_state = state_dict.get("train_loader")
        self._restored = True

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trained = False

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.ckpt_path or self._trained or trainer.limit_train_batches == 0:
            return
        if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
            reached, limit = f"{trainer.global_step} steps", ("max_steps", trainer.max_steps)
        else:
            reached, limit = f"{trainer.current_epoch} epochs", ("max_epochs", trainer.max_epochs)
        rank_zero_warn(
            f"ExactResume: nothing was trained: {trainer.ckpt_path} holds {reached}, which reaches this run's "
            f"{limit[0]}={limit[1]}. Raise --trainer.{limit[0]} above {limit[1]} to train further."
        )

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trained = True
        restored, self._restored = self._restored, False
        loader_state, self._loader_state = self._loader_state, None
        loader = _train_loader(trainer)
        if loader_state is not None and isinstance(loader, _Stateful):
            loader.load_state_dict(loader_state)
        workers = getattr(loader, "num_workers", 0)
        if restored and workers:
            rank_zero_warn(
                f"ExactResume: resumed with num_workers={workers}; worker processes draw their random augmentations "
                "from generators no checkpoint holds, so this run will not continue the interrupted one bit for bit "
                "(use num_workers=0 for an exact continuation)."
            )


def _train_loader(trainer: L.Trainer | None) -> Any:
    """The training DataLoader itself (Lightning may hold it in a CombinedLoader), or None."""
    loader = trainer.train_dataloader if trainer is not None else None
    flattened = getattr(loader, "flattened", None)
    if flattened is not None:
        return flattened[0] if len(flattened) == 1 else None
    return loader
