"""Trained weights of the presets, in the manner of torchvision's weights API: each published set says what trained
it (the command, the data), what it reached (the metric on the test split), its parameter count and the SHA-256 of
its file, and loads offline, checked, with ``weights_only=True``.

The weights live in a folder: ``zoo/weights/`` inside the package (small models), or the folder named by the
``ZOO_WEIGHTS_DIR`` environment variable or a ``weights_dir`` argument (larger ones, copied there by hand). Each folder
holds ``weights.json`` (the metadata of each set) and one ``<preset>.pt`` per set (a ``state_dict``).
``benchmarks/publish_weights.py`` trains a preset with its recipe and writes both.

>>> import zoo
>>> "cnn_digits" in zoo.list_weights()
True
>>> model = zoo.create_model("cnn_digits", pretrained=True)
>>> get_weights("cnn_digits").metric
'test/acc'
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from zoo.checkpoint import load_file

PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"
MANIFEST = "weights.json"


@dataclass(frozen=True)
class Weights:
    """One published set of weights of a preset and what is known about it."""

    preset: str
    file: str  #: the ``state_dict`` file, in the weights folder
    sha256: str
    metric: str  #: what was measured on the test split, e.g. ``test/acc``
    value: float
    data: str  #: the data it was trained and tested on
    command: str  #: the command that trained it
    num_params: int
    date: str
    versions: dict[str, str] = field(default_factory=dict)
    #: the arguments the recipe built the preset with, where they differ from the preset's (sizes from the data, a
    #: distribution head, the optimizer's settings); ``create_model(preset, pretrained=True)`` applies them
    arguments: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)  #: the data's, as a checkpoint keeps it
    recipe: str = ""  #: the recipe that trained it

    def to_dict(self) -> dict[str, Any]:
        """The manifest entry."""
        return asdict(self)


def weights_dir(folder: str | os.PathLike[str] | None = None) -> Path:
    """The weights folder: ``folder``, else ``$ZOO_WEIGHTS_DIR``, else the package's."""
    return Path(folder or os.environ.get("ZOO_WEIGHTS_DIR") or PACKAGE_WEIGHTS)


def read_manifest(folder: str | os.PathLike[str] | None = None) -> dict[str, Weights]:
    """Every set of weights a folder publishes, by preset (none for a folder without ``weights.json``).

    Raises:
        ValueError: a manifest that is not valid, naming the file.
    """
    path = weights_dir(folder) / MANIFEST
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
        return {entry["preset"]: Weights(**entry) for entry in entries}
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(
            f"{path} is not a weights manifest (a JSON list of entries like zoo.Weights): {error}"
        ) from None


def list_weights(folder: str | os.PathLike[str] | None = None) -> list[str]:
    """The presets with published weights, sorted."""
    return sorted(read_manifest(folder))


def get_weights(preset: str, folder: str | os.PathLike[str] | None = None) -> Weights:
    """The published weights of ``preset``.

    Raises:
        ValueError: when ``preset`` has none, naming the folder and the presets that have.
    """
    published = read_manifest(folder)
    if preset not in published:
        where = weights_dir(folder)
        close = difflib.get_close_matches(preset, published, n=3, cutoff=0.6)
        hint = (
            f" Did you mean {', '.join(close)}?" if close else f" Published: {', '.join(sorted(published)) or 'none'}."
        )
        raise ValueError(f"no published weights for {preset!r} in {where}.{hint}")
    return published[preset]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_weights(model: nn.Module, preset: str | Weights, folder: str | os.PathLike[str] | None = None) -> nn.Module:
    """Load the published weights of ``preset`` (a name, or its :class:`Weights`) into ``model`` (built as the
    preset); the file's hash is checked before it is read, and it is read with ``weights_only=True``.

    Raises:
        FileNotFoundError: the file is missing, naming it and where to put it.
        ValueError: the hash differs (a damaged or replaced file), or the weights do not fit the model.
    """
    weights = preset if isinstance(preset, Weights) else get_weights(preset, folder)
    preset = weights.preset
    path = weights_dir(folder) / weights.file
    if not path.is_file():
        raise FileNotFoundError(f"the weights of {preset!r} are missing: put {weights.file} in {path.parent}/")
    digest = file_sha256(path)
    if digest != weights.sha256:
        raise ValueError(
            f"{path} has SHA-256 {digest[:16]}..., not the published {weights.sha256[:16]}...: the file is damaged "
            "or is not these weights; copy it again"
        )
    state_dict = load_file(path, "weights file")
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(
            f"the weights of {preset!r} do not fit this model (built with other arguments?): {error}"
        ) from None
    return model
