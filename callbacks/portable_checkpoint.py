"""A ModelCheckpoint whose state survives a move of its run folder."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from typing_extensions import override

_PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


class PortableModelCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint``, saving the paths of its checkpoints relative to its own folder.

    Lightning keeps ``best_model_path`` and the top-k as written (often relative to the working directory) and, when
    a run resumes with another ``dirpath``, drops its scores and keeps a stale ``best_model_path``: a run folder moved
    (or resumed from another directory) forgets its best checkpoint and fails where it reads it. Here every path is
    stored relative to ``dirpath`` and resolved against the ``dirpath`` of the resuming run; when the files are not
    there (a run resumed into another folder), Lightning's own rule applies. Arguments as ``ModelCheckpoint``.

    Example:
        >>> checkpoint = PortableModelCheckpoint(dirpath="runs/a/checkpoints", filename="last")
        >>> checkpoint.best_model_path = "runs/a/checkpoints/epoch=1.ckpt"
        >>> checkpoint.state_dict()["best_model_path"]
        'epoch=1.ckpt'
    """

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.dirpath is None:
            return state
        for key in _PATH_KEYS:
            state[key] = self._relative(state[key])
        state["best_k_models"] = {self._relative(path): score for path, score in state["best_k_models"].items()}
        state["paths_relative_to_dirpath"] = True
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("paths_relative_to_dirpath") and self.dirpath is not None:
            state = dict(state_dict)
            state.pop("paths_relative_to_dirpath")
            resolved = {key: self._resolve(state[key]) for key in _PATH_KEYS}
            if all(not path or os.path.isfile(path) for path in resolved.values()):  # the run's own folder
                state.update(resolved, dirpath=self.dirpath)
                state["best_k_models"] = {self._resolve(path): score for path, score in state["best_k_models"].items()}
            state_dict = state
        super().load_state_dict(state_dict)

    def _relative(self, path: str) -> str:
        return os.path.relpath(path, self.dirpath) if path else path

    def _resolve(self, path: str) -> str:
        return os.path.join(self.dirpath, path) if path else path
