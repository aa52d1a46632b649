"""Integrity of checkpoint files: torch's zip format stores a CRC-32 per record that ``torch.load`` never checks."""

from __future__ import annotations

import importlib
import os
import zipfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from zoo.tasks import TaskModule


def verify_checkpoint(path: str | os.PathLike[str]) -> None:
    """Raise a ValueError naming ``path`` and the damaged record when a record fails its CRC-32 check.

    ``torch.load`` reads flipped bytes inside a tensor's record silently; the zip archive torch writes keeps a
    checksum of every record, checked here (one read of the file). Files that are not zip archives (empty,
    truncated, the legacy format) are left to ``torch.load``, whose error the callers name.
    """
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"{path} is a damaged checkpoint archive ({type(error).__name__}: {error})") from error
    if damaged is not None:
        raise ValueError(
            f"{path} is corrupt: its record {damaged!r} fails the CRC-32 check, so bytes changed after it was "
            "written (disk or copy error). Nothing was loaded; use another checkpoint (the best one beside "
            "last.ckpt, or an earlier copy)."
        )


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A Lightning checkpoint's contents, read with ``weights_only=True`` after the CRC check (memory-mapped, so a
    large one costs little to inspect).

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        ValueError: naming ``path`` when a record fails its checksum (bytes changed after writing), when it is not a
            readable PyTorch checkpoint (empty, truncated, another format) or holds no Lightning checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    verify_checkpoint(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # zip, unpickling and weights_only failures come in many types
        raise ValueError(
            f"{path} ({os.path.getsize(path)} bytes) is not a readable PyTorch checkpoint ({type(error).__name__}: "
            f"{error}). Give a .ckpt file written by a Trainer, e.g. logs/<recipe>/version_N/checkpoints/last.ckpt."
        ) from error
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} holds no Lightning checkpoint (no 'state_dict' entry)")
    return checkpoint


def load_from_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> TaskModule:
    """The zoo model a checkpoint was written by, rebuilt from its saved hyperparameters, in eval mode.

    Reads tensors only (``weights_only=True``) after the CRC check, and imports nothing outside the zoo: the
    checkpoint names its class (``_class_path``), which must be a zoo task.

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        ValueError: naming ``path`` when it is damaged, not a Lightning checkpoint, or of a class outside the zoo.
    """
    from zoo.tasks import TaskModule

    class_path = (read_checkpoint(path).get("hyper_parameters") or {}).get("_class_path")
    if not class_path:
        raise ValueError(f"{path} does not name its model class (no hyper_parameters._class_path)")
    module, _, name = class_path.rpartition(".")
    if module != "zoo" and not module.startswith("zoo."):
        raise ValueError(f"{path} names the model class {class_path}, which is not part of the zoo; not imported")
    cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, TaskModule)):
        raise ValueError(f"{path} names {class_path}, which is not a zoo model class")
    return cls.load_from_checkpoint(path, map_location=map_location, weights_only=True).eval()
