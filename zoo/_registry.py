"""Model registry: every preset is a small registered function whose name is the model name.

>>> import zoo
>>> "cnn_bn" in zoo.list_models("cnn*")
True
>>> model = zoo.create_model("mlp_small", num_classes=3)
>>> model.num_classes
3
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

ModelFn = TypeVar("ModelFn", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of one registered preset; tests check it against the built model."""

    name: str
    fn: Callable[..., nn.Module]
    family: str
    input_size: tuple[int, ...]
    num_params: int | None = None
    source: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    task: str = "image_classification"


class UnknownModelError(ValueError):
    """Raised for a model name that is not registered; the message lists close matches."""


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    *,
    input_size: tuple[int, ...],
    num_params: int | None = None,
    source: str = "",
    tags: tuple[str, ...] = (),
    task: str = "image_classification",
) -> Callable[[ModelFn], ModelFn]:
    """Register a preset function under its own name.

    Args:
        input_size: the input shape without batch, e.g. ``(3, 32, 32)``.
        num_params: exact parameter count with default arguments (checked by the tests).
        source: paper or reference implementation the preset follows.
        tags: free-form labels, e.g. ``("cifar",)``.
        task: the task base the preset trains with (``"image_classification"``, ``"denoising"``).
    """

    def decorator(fn: ModelFn) -> ModelFn:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"Model {name!r} is already registered by {_REGISTRY[name].fn.__module__}")
        family = fn.__module__.rsplit(".", 1)[-1]
        _REGISTRY[name] = ModelInfo(name, fn, family, tuple(input_size), num_params, source, tuple(tags), task)
        return fn

    return decorator


def list_models(pattern: str = "*", family: str | None = None, task: str | None = None) -> list[str]:
    """Sorted names of registered presets matching an fnmatch ``pattern`` (e.g. ``"cnn*"``), a family and a task."""
    return sorted(
        name
        for name, info in _REGISTRY.items()
        if fnmatch.fnmatchcase(name, pattern)
        and (family is None or info.family == family)
        and (task is None or info.task == task)
    )


def model_info(name: str) -> ModelInfo:
    """Metadata of a registered preset; unknown names raise :class:`UnknownModelError` with suggestions."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"Unknown model {name!r}.{hint} `zoo.list_models()` lists all {len(_REGISTRY)} models."
        ) from None


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered preset."""
    return name in _REGISTRY


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered preset; ``overrides`` replace its arguments, and those that are ``None`` are ignored."""
    info = model_info(name)
    return info.fn(**{key: value for key, value in overrides.items() if value is not None})
