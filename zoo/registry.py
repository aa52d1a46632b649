"""Model registry: every preset is a small registered function whose name is the model name.

A preset function returns its architecture's arguments; the decorator records them with the model class, so the
registry reads a preset without running model code, and replaces the function by a builder of the model (timm's
``resnet18(**overrides)``).

>>> import zoo
>>> "cnn_bn" in zoo.list_models("cnn*")
True
>>> model = zoo.create_model("mlp_small", num_classes=3)
>>> model.num_classes
3
>>> zoo.preset_config("mlp_small")  # read without building the model
{'class_path': 'zoo.mlp.MLP', 'init_args': {'hidden_dims': [128]}}
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from zoo.checkpoint import to_primitive

InputKind = Literal["image", "volume", "series", "tokens", "features", "points"]


@dataclass(frozen=True)
class InputSpec:
    """What a preset takes, without the batch dimension.

    Args:
        shape: ``(C, H, W)`` images, ``(C, D, H, W)`` volumes, ``(T, F)`` series of ``F`` features, ``(T,)`` token
            ids, ``(F,)`` feature vectors, ``(N, 3)`` point clouds; ``T`` is the nominal (with ``variable_length``: the
            longest) sequence length, ``N`` the nominal number of points.
        kind: ``"image"``, ``"volume"``, ``"series"``, ``"tokens"``, ``"features"`` or ``"points"``.
        dtype: element type (``torch.long`` for token ids).
        variable_length: whether the time axis (the first) may be shorter; batches then carry ``lengths``.
        vocab_size: the number of token ids (``kind="tokens"``).

    >>> InputSpec((64,), kind="tokens", dtype=torch.long, variable_length=True, vocab_size=4).describe()
    'tokens (T<=64,) int64, ids < 4'
    """

    shape: tuple[int, ...]
    kind: InputKind = "image"
    dtype: torch.dtype = torch.float32
    variable_length: bool = False
    vocab_size: int | None = None

    def __post_init__(self) -> None:
        ndim = {"image": 3, "volume": 4, "series": 2, "tokens": 1, "features": 1, "points": 2}[self.kind]
        if len(self.shape) != ndim:
            raise ValueError(f"a {self.kind} input spec has {ndim} dims, got shape {self.shape}")
        if (self.kind == "tokens") != (self.dtype == torch.long) or (self.kind == "tokens") != bool(self.vocab_size):
            raise ValueError("token inputs, and only they, are torch.long with a vocab_size")

    @classmethod
    def of(cls, size: tuple[int, ...] | InputSpec) -> InputSpec:
        """A spec as given, or the image (3 dims) or volume (4 dims) spec of a shape."""
        if isinstance(size, InputSpec):
            return size
        return cls(tuple(size), kind="volume" if len(size) == 4 else "image")

    def describe(self) -> str:
        """One line for tables, e.g. ``image 3x32x32 float32`` or ``series (T<=784, 1) float32``."""
        dtype = str(self.dtype).removeprefix("torch.")
        if self.kind in ("image", "volume"):
            return f"{self.kind} {'x'.join(map(str, self.shape))} {dtype}"
        if self.kind == "features":
            return f"features ({self.shape[0]},) {dtype}"
        if self.kind == "points":
            return f"points (N={self.shape[0]}, {self.shape[1]}) {dtype}"
        time = f"T<={self.shape[0]}" if self.variable_length else f"T={self.shape[0]}"
        dims = ", ".join([time, *map(str, self.shape[1:])])
        vocab = f", ids < {self.vocab_size}" if self.vocab_size else ""
        return f"{self.kind} ({dims}{',' if len(self.shape) == 1 else ''}) {dtype}{vocab}"


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of one registered preset; tests check it against the built model."""

    name: str
    cls: type[nn.Module]
    args: Mapping[str, Any]
    builder: Callable[..., nn.Module]
    family: str
    input_spec: InputSpec
    num_params: int | None = None
    source: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    task: str = "image_classification"

    @property
    def input_size(self) -> tuple[int, ...]:
        """The input shape without batch (``input_spec.shape``)."""
        return self.input_spec.shape

    @property
    def class_path(self) -> str:
        """``module.Name`` of the model class."""
        return f"{self.cls.__module__}.{self.cls.__name__}"


class UnknownModelError(ValueError):
    """Raised for a model name that is not registered; the message lists close matches."""


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    cls: type[nn.Module],
    *,
    input_size: tuple[int, ...] | InputSpec,
    num_params: int | None = None,
    source: str = "",
    tags: tuple[str, ...] = (),
    task: str = "image_classification",
) -> Callable[[Callable[[], dict[str, Any]]], Callable[..., nn.Module]]:
    """Register a preset: a function named as the model, returning the arguments of ``cls`` that make it.

    The function is called once, here; what it returns is the preset. The name is bound to a builder,
    ``preset(**overrides) -> model``.

    Args:
        cls: the model class the preset builds.
        input_size: the input shape without batch, e.g. ``(3, 32, 32)`` (an image), or an :class:`InputSpec`.
        num_params: exact parameter count with default arguments (checked by the tests).
        source: paper or reference implementation the preset follows.
        tags: free-form labels, e.g. ``("cifar",)``.
        task: the name of the task the preset trains for (``"image_classification"``, ``"sequence_tagging"``, ...).
    """

    def decorator(fn: Callable[[], dict[str, Any]]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"Model {name!r} is already registered by {_REGISTRY[name].builder.__module__}")
        args = to_primitive(fn(), name)  # lists, not tuples: what a config file and the checkpoint hold

        @functools.wraps(fn)
        def builder(**overrides: Any) -> nn.Module:
            return create_model(name, **overrides)

        family = fn.__module__.rsplit(".", 1)[-1]
        spec = InputSpec.of(input_size)
        _REGISTRY[name] = ModelInfo(name, cls, args, builder, family, spec, num_params, source, tuple(tags), task)
        return builder

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


def _arguments(info: ModelInfo, overrides: Mapping[str, Any]) -> dict[str, Any]:
    given = {key: value for key, value in overrides.items() if value is not None}
    return {**copy.deepcopy(dict(info.args)), **given}  # a copy: a model may change the lists it is given


def create_model(
    name: str, pretrained: bool = False, weights_dir: str | os.PathLike[str] | None = None, **overrides: Any
) -> nn.Module:
    """Build a registered preset; ``overrides`` replace its arguments, and those that are ``None`` are ignored.

    With ``pretrained``, the preset's published weights are loaded (:mod:`zoo.weights`: checked by hash, read with
    ``weights_only=True``, from the package or ``weights_dir``/``$ZOO_WEIGHTS_DIR``); overrides must then keep the
    architecture (a new ``lr`` is fine, a new width is refused).
    """
    info = model_info(name)
    if not pretrained:
        return info.cls(**_arguments(info, overrides))
    from zoo.weights import get_weights, load_weights  # zoo.weights reads files through zoo.checkpoint

    weights = get_weights(name, weights_dir)
    # The arguments the weights were trained with (a vocabulary's size, a distribution head, ...) unless overridden.
    model = info.cls(**_arguments(info, {**weights.arguments, **overrides}))
    return load_weights(model, weights, weights_dir)


def preset_config(name: str, **overrides: Any) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of a preset, as LightningCLI and Hydra take it, without building the model.

    ``init_args`` holds the preset's own arguments and the overrides (not ``None``); the class's defaults fill the
    rest.
    """
    info = model_info(name)
    return {"class_path": info.class_path, "init_args": _arguments(info, overrides)}
