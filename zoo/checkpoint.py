"""Checkpoints and other tensor files, read safely: the one place the package calls ``torch.load``.

- :func:`read_checkpoint` reads a Lightning checkpoint once: each record's CRC-32 is checked first (``torch.load``
  never checks them), then it is loaded with ``weights_only=True``; a failure names the file and its size.
- :func:`import_class` imports a class a file names only from trusted modules (importing a module runs its code).
- :func:`model_from_checkpoint` builds the model a checkpoint describes and loads its weights;
  :func:`load_from_checkpoint` does both from a path.
- :func:`data_preprocessing` finds the preprocessing the training data saved (normalization, sizes, class names):
  a plain dict, read without building the datamodule.
- :func:`to_primitive` turns hyperparameters into primitives, so checkpoints load with ``weights_only=True``.

>>> import numpy as np
>>> to_primitive({"channels": (8, np.int64(16)), "lr": np.float32(0.5)}, "hparams")
{'channels': [8, 16], 'lr': 0.5}
"""

from __future__ import annotations

import enum
import importlib
import os
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch

#: Modules whose classes a checkpoint may name by default.
TRUSTED_MODULES: tuple[str, ...] = ("zoo",)
#: The checkpoint entry naming the model class that wrote it (zoo.tasks.TaskModule.on_save_checkpoint).
CLASS_PATH_KEY = "model_class_path"


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


def load_file(path: str | os.PathLike[str], what: str = "PyTorch file", hint: str = "") -> Any:
    """The contents of a file written by ``torch.save``, read with ``weights_only=True`` after the CRC check of every
    record, and each record's size checked against its tensor.

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        ValueError: naming ``path`` and its size when a record fails its checksum or it cannot be read.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such {what}")
    verify_checkpoint(path)
    try:
        # Not memory-mapped: a mapped storage is read by its offset and expected size, so a record rewritten shorter
        # (its checksum valid) reads the bytes after it; a plain read checks each record's size.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, unpickling and weights_only failures come in many types
        raise ValueError(
            f"{path} ({os.path.getsize(path)} bytes) is not a readable {what} ({type(error).__name__}: {error})."
            f"{' ' + hint if hint else ''}"
        ) from error


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A Lightning checkpoint's contents (see :func:`load_file`).

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        ValueError: naming ``path`` when it is damaged, not a readable PyTorch file or holds no Lightning checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    hint = "Give a .ckpt file written by a Trainer, e.g. logs/<recipe>/version_N/checkpoints/last.ckpt."
    checkpoint = load_file(path, "PyTorch checkpoint", hint)
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} holds no Lightning checkpoint (no 'state_dict' entry)")
    return dict(checkpoint)


def import_class(class_path: str, trusted: Sequence[str] | None = TRUSTED_MODULES, source: str = "") -> type:
    """The class ``class_path`` names (``package.module.Name``), imported only from the ``trusted`` packages.

    Args:
        class_path: the dotted path of the class.
        trusted: packages (and their modules) that may be imported; ``None`` allows any module (a path the user
            typed, not one read from a file).
        source: what named the class (a file), for the error messages.

    Raises:
        ValueError: when the module is not trusted (nothing is imported), or the path names no class.
    """
    module, _, name = class_path.rpartition(".")
    origin = f"{source} names" if source else "the class path"
    if trusted is not None and not any(module == root or module.startswith(root + ".") for root in trusted):
        raise ValueError(
            f"{origin} {class_path}, which is outside the trusted packages ({', '.join(dict.fromkeys(trusted))}); it "
            "is not imported (importing a module runs its code)."
        )
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"{origin} {class_path}, which cannot be imported ({error})") from None
    if not isinstance(cls, type):
        raise ValueError(f"{origin} {class_path}, which is not a class")
    return cls


def checkpoint_class(checkpoint: Mapping[str, Any], source: str, trusted: Sequence[str] = TRUSTED_MODULES) -> type:
    """The LightningModule class a checkpoint names (``model_class_path``, or the ``_class_path`` hyperparameter
    LightningCLI records), from trusted modules only."""
    class_path = checkpoint.get(CLASS_PATH_KEY) or (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    if not class_path:
        raise ValueError(
            f"{source} does not name its model class (no {CLASS_PATH_KEY} or hyper_parameters._class_path)"
        )
    cls = import_class(class_path, trusted, source)
    if not issubclass(cls, L.LightningModule):
        raise ValueError(f"{source} names {class_path}, which is not a LightningModule")
    return cls


def check_finite(state_dict: Mapping[str, Any], source: str, allow_nonfinite: bool = False) -> None:
    """Refuse (or, with ``allow_nonfinite``, warn about) weights holding NaN/Inf, naming the first such tensor: a
    model that diverged answers anything, confidently.

    Raises:
        ValueError: naming ``source`` and the tensor.
    """
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            count = int((~torch.isfinite(value)).sum())
            message = (
                f"{source} holds NaN/Inf weights: {name} has {count} of {value.numel()} values non-finite (the run "
                "diverged after this checkpoint's last good state). Use an earlier checkpoint"
            )
            if not allow_nonfinite:
                raise ValueError(f"{message}, or load it with allow_nonfinite=True to inspect it.")
            warnings.warn(f"{message}; loaded anyway (allow_nonfinite=True).", stacklevel=3)
            return


def model_from_checkpoint(
    checkpoint: Mapping[str, Any],
    source: str = "the checkpoint",
    trusted: Sequence[str] = TRUSTED_MODULES,
    allow_nonfinite: bool = False,
) -> L.LightningModule:
    """The model a checkpoint was written by, rebuilt from its saved hyperparameters with its weights, in eval mode.

    What Lightning's ``load_from_checkpoint`` does, from a checkpoint already read (:func:`read_checkpoint`), so a
    command reads each file once. Weights with NaN/Inf are refused (:func:`check_finite`); weights that do not fit
    the rebuilt model are named with the file.

    Raises:
        ValueError: naming ``source`` for an untrusted class, non-finite weights, or weights of other names or shapes.
    """
    cls = checkpoint_class(checkpoint, source, trusted)
    check_finite(checkpoint["state_dict"], source, allow_nonfinite)
    hparams = {key: value for key, value in (checkpoint.get("hyper_parameters") or {}).items() if key[:1] != "_"}
    try:
        model = cls(**hparams)
        model.on_load_checkpoint(dict(checkpoint))
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, RuntimeError) as error:  # arguments or tensors that do not fit the class as it is now
        first = str(error).strip().splitlines()[0]
        detail = "\n".join(str(error).strip().splitlines()[1:4])
        raise ValueError(
            f"{source} does not fit {cls.__name__} as it is now ({first}{': ' + detail.strip() if detail else ''}). "
            "It was written by another version of the model, or its hyperparameters were edited."
        ) from error
    return model.eval()


def load_from_checkpoint(
    path: str | os.PathLike[str], trusted: Sequence[str] = TRUSTED_MODULES, allow_nonfinite: bool = False
) -> L.LightningModule:
    """The zoo model a checkpoint file was written by, in eval mode (:func:`read_checkpoint`, then
    :func:`model_from_checkpoint`).

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        ValueError: naming ``path`` when it is damaged, not a Lightning checkpoint, of a class outside ``trusted``,
            holds non-finite weights or weights that do not fit the model.
    """
    return model_from_checkpoint(read_checkpoint(path), str(path), trusted, allow_nonfinite)


#: Entries Lightning writes into every checkpoint (none of them is a datamodule's state).
_LIGHTNING_ENTRIES = {
    "state_dict",
    "hyper_parameters",
    "datamodule_hyper_parameters",
    "callbacks",
    "loops",
    "optimizer_states",
    "lr_schedulers",
}


def data_preprocessing(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``preprocessing`` a datamodule saved in the checkpoint (``checkpoint[<its class name>]``, written by
    ``datamodules.base.SavesPreprocessing``), or ``None``. Reads only the checkpoint's own entries: no class is
    imported, no datamodule built, no path it names is read."""
    for key, value in checkpoint.items():
        if key not in _LIGHTNING_ENTRIES and isinstance(value, Mapping):
            found = value.get("preprocessing")
            if isinstance(found, Mapping):
                return to_primitive(found, "preprocessing")
    return None


# --- hyperparameters as primitives ------------------------------------------------------------------------------
_PRIMITIVES = (bool, int, float, str)


def to_primitive(value: Any, name: str) -> Any:
    """``value`` as None, bool, int, float, str, or lists and dicts of them.

    Hydra passes YAML lists and dicts as omegaconf ``ListConfig``/``DictConfig``; numpy, tensors, paths and tuples
    arrive from scripts. Stored as they are, they make ``weights_only`` loading fail (``Unsupported global``) and
    ``hparams.yaml`` unreadable by ``yaml.safe_load`` (``!!python/tuple``). Tuples and sets become lists, numpy
    scalars Python scalars, arrays and tensors nested lists, paths strings, enums their value and dtypes their name
    (``"float32"``). Dict keys must be primitive themselves.

    Raises:
        TypeError: for anything else (a module, a class, a function), naming the hyperparameter ``name``.
    """
    if value is None or type(value) in _PRIMITIVES:
        return value
    if type(value).__module__.startswith("omegaconf."):
        from omegaconf import OmegaConf

        if OmegaConf.is_config(value):
            return to_primitive(OmegaConf.to_container(value, resolve=True), name)
    if isinstance(value, enum.Enum):
        return to_primitive(value.value, name)
    if isinstance(value, np.generic | np.ndarray | torch.Tensor):
        return to_primitive(value.tolist(), name)  # a 0-d array or tensor gives a scalar
    for base in _PRIMITIVES:  # subclasses (numpy's float64 is a float) as the plain type
        if isinstance(value, base):
            return base(value)
    if isinstance(value, os.PathLike):
        return os.fsdecode(value)
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            plain = to_primitive(key, f"{name} key")
            if plain is not None and not isinstance(plain, _PRIMITIVES):
                raise TypeError(f"Hyperparameter {name!r} has a key of type {type(key).__name__}; keys must be scalars")
            out[plain] = to_primitive(item, f"{name}.{plain}")
        return out
    if isinstance(value, set | frozenset):
        value = _sorted(value)  # the same checkpoint and hparams.yaml in every process
    if isinstance(value, list | tuple):  # torch.Size is a tuple
        return [to_primitive(item, f"{name}[{index}]") for index, item in enumerate(value)]
    cls = type(value)
    raise TypeError(
        f"Hyperparameter {name!r} is a {cls.__module__}.{cls.__qualname__}: hyperparameters must be primitive "
        "(None, bool, int, float, str, and lists and dicts of them) so that checkpoints load with "
        "torch.load(..., weights_only=True). Pass a name or numbers the model builds it from instead."
    )


def _sorted(items: set | frozenset) -> list:
    try:
        return sorted(items)
    except TypeError:  # mixed types
        return sorted(items, key=repr)
