"""Integrity of checkpoint files: torch's zip format stores a CRC-32 per record that ``torch.load`` never checks."""

from __future__ import annotations

import os
import zipfile


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
