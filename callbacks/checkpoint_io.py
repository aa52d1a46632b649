"""Checkpoints written so that a kill or a full disk never leaves a damaged file under a checkpoint's name."""

from __future__ import annotations

import contextlib
import errno
import glob
import io
import os
import shutil
import tempfile
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

#: What a temporary checkpoint file is called: hidden, beside its target, ``.<target name>.<random>.tmp``.
TEMP_PATTERN = ".{name}.*.tmp"


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (a full disk, a file-size limit); the message names the folder and the
    bytes needed, and says that the earlier checkpoints are intact."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO``, writing each checkpoint atomically on one filesystem.

    Lightning serializes a checkpoint in memory and moves a temporary file from ``$TMPDIR`` onto the target: across
    filesystems that move is a copy into the existing file, which a kill leaves truncated. Here the temporary file
    lives in the target's own folder, is flushed and fsynced, and replaces the target with ``os.replace`` (a rename):
    the target holds the old checkpoint or the new one, never a part. Temporary files that a killed run left in a
    folder are removed the first time this process writes there. When the disk is full (or a file-size limit is
    reached) nothing under the checkpoint's name changes, and :class:`CheckpointWriteError` names the folder, the
    bytes needed and the bytes free.

    Use it with ``Trainer(plugins=[AtomicCheckpointIO()])``; the recipes do (``recipes/defaults.yaml``).

    Example:
        >>> import tempfile, torch, os
        >>> folder = tempfile.mkdtemp()
        >>> AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, os.path.join(folder, "a.ckpt"))
        >>> os.listdir(folder)
        ['a.ckpt']
    """

    def __init__(self) -> None:
        super().__init__()
        self._cleaned: set[str] = set()

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        self._remove_orphans(folder)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # in memory first: the size is known before the disk is touched
        data = buffer.getbuffer()
        free = shutil.disk_usage(folder).free
        if free < len(data):
            raise self._error(path, len(data), free, None)
        handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's file is private; a checkpoint gets the usual mode
            os.replace(temporary, path)
        except OSError as error:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)
            if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise self._error(path, len(data), shutil.disk_usage(folder).free, error) from error
            raise
        _fsync_folder(folder)  # the rename itself survives a power loss

    def _remove_orphans(self, folder: str) -> None:
        """Temporary checkpoint files a killed run left in ``folder`` (once per folder and process)."""
        if folder in self._cleaned:
            return
        self._cleaned.add(folder)
        for orphan in glob.glob(os.path.join(folder, TEMP_PATTERN.format(name="*"))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(orphan)

    @staticmethod
    def _error(path: str, needed: int, free: int, cause: OSError | None) -> CheckpointWriteError:
        reason = f" ({cause.strerror})" if cause is not None and cause.strerror else ""
        error = CheckpointWriteError(
            f"cannot write {os.path.basename(path)} into {os.path.dirname(os.path.abspath(path))}{reason}: it needs "
            f"{needed:,} bytes and {free:,} are free. Nothing under that name changed, and the checkpoints already "
            "there are intact; free some space (or give --trainer.default_root_dir on another disk) and resume from "
            "last.ckpt."
        )
        error.errno = errno.ENOSPC
        return error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: str) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory descriptors
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
