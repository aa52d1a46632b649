"""Model registry: every preset is a small registered function whose name is the model name.

>>> import zoo
>>> "cnn_bn" in zoo.list_models("cnn*")
True
>>> model = zoo.create_model("mlp_small", num_classes=3)
>>> model.num_classes
3
>>> zoo.preset_config("mlp_small")["class_path"]  # resolved without building the model
'zoo.mlp.MLP'
"""

from __future__ import annotations

import contextvars
import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import torch
from torch import nn

ModelFn = TypeVar("ModelFn", bound=Callable[..., nn.Module])
InputKind = Literal["image", "volume", "series", "tokens"]


@dataclass(frozen=True)
class InputSpec:
    """What a preset takes, without the batch dimension.

    Args:
        shape: ``(C, H, W)`` images, ``(C, D, H, W)`` volumes, ``(T, F)`` series of ``F`` features, ``(T,)`` token
            ids; ``T`` is the nominal (with ``variable_length``: the longest) sequence length.
        kind: ``"image"``, ``"volume"``, ``"series"`` or ``"tokens"``.
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
        ndim = {"image": 3, "volume": 4, "series": 2, "tokens": 1}[self.kind]
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
        time = f"T<={self.shape[0]}" if self.variable_length else f"T={self.shape[0]}"
        dims = ", ".join([time, *map(str, self.shape[1:])])
        vocab = f", ids < {self.vocab_size}" if self.vocab_size else ""
        return f"{self.kind} ({dims}{',' if len(self.shape) == 1 else ''}) {dtype}{vocab}"


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of one registered preset; tests check it against the built model."""

    name: str
    fn: Callable[..., nn.Module]
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


class UnknownModelError(ValueError):
    """Raised for a model name that is not registered; the message lists close matches."""


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    *,
    input_size: tuple[int, ...] | InputSpec,
    num_params: int | None = None,
    source: str = "",
    tags: tuple[str, ...] = (),
    task: str = "image_classification",
) -> Callable[[ModelFn], ModelFn]:
    """Register a preset function under its own name.

    Args:
        input_size: the input shape without batch, e.g. ``(3, 32, 32)`` (an image), or an :class:`InputSpec`.
        num_params: exact parameter count with default arguments (checked by the tests).
        source: paper or reference implementation the preset follows.
        tags: free-form labels, e.g. ``("cifar",)``.
        task: the name of the task the preset trains for (``"image_classification"``, ``"sequence_tagging"``, ...).
    """

    def decorator(fn: ModelFn) -> ModelFn:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"Model {name!r} is already registered by {_REGISTRY[name].fn.__module__}")
        family = fn.__module__.rsplit(".", 1)[-1]
        spec = InputSpec.of(input_size)
        _REGISTRY[name] = ModelInfo(name, fn, family, spec, num_params, source, tuple(tags), task)
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


# --- resolving a preset without building it -------------------------------------------------------------------

_RESOLVING = contextvars.ContextVar("zoo_resolving_preset", default=False)


class _PresetCall(Exception):  # control flow of preset_config, never seen by users
    def __init__(self, cls: type, arguments: dict[str, Any]) -> None:
        super().__init__(cls.__name__)
        self.cls, self.arguments = cls, arguments


def stop_if_resolving(model: nn.Module, init_args: dict[str, Any]) -> None:
    """Called by ``TaskModule.__init__`` before any layer exists: while :func:`preset_config` resolves a preset,
    stop there with the model's class and its complete init arguments."""
    if _RESOLVING.get():
        raise _PresetCall(type(model), init_args)


def preset_config(name: str, **overrides: Any) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of a preset, as LightningCLI takes it, without building the model.

    The preset function runs until its model's task base has recorded the init arguments, before any layer is
    built; those arguments, defaults included, are the preset.
    """
    info = model_info(name)
    token = _RESOLVING.set(True)
    try:
        info.fn(**{key: value for key, value in overrides.items() if value is not None})
    except _PresetCall as call:
        return {"class_path": f"{call.cls.__module__}.{call.cls.__name__}", "init_args": call.arguments}
    finally:
        _RESOLVING.reset(token)
    raise TypeError(f"Preset {name!r} built no TaskModule, so it cannot be resolved to a class and arguments")
