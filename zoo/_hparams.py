"""Hyperparameters as primitives, so checkpoints load with ``torch.load(..., weights_only=True)``.

Hydra passes YAML lists and dicts as omegaconf ``ListConfig``/``DictConfig``; numpy, tensors, paths and tuples
arrive from scripts. Stored as they are, they make ``weights_only`` loading fail (``Unsupported global``) and
``hparams.yaml`` unreadable by ``yaml.safe_load`` (``!!python/tuple``).

>>> import numpy as np
>>> to_primitive({"channels": (8, np.int64(16)), "lr": np.float32(0.5)}, "hparams")
{'channels': [8, 16], 'lr': 0.5}
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

_PRIMITIVES = (bool, int, float, str)


def to_primitive(value: Any, name: str) -> Any:
    """``value`` as None, bool, int, float, str, or lists and dicts of them.

    Tuples and sets become lists, numpy scalars Python scalars, arrays and tensors nested lists, paths strings,
    enums their value and dtypes their name (``"float32"``). Dict keys must be primitive themselves.

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
