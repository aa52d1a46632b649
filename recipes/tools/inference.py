"""The one inference path of the tools: inputs in the data's units to the task's outputs in the data's units.

- :class:`Preprocessing`: what the training data did to inputs at evaluation time, as primitives: the kind of
  input, image size and channels, normalization, class names, vocabulary. A checkpoint carries the datamodule's
  (``datamodules.base.SavesPreprocessing``); an exported file carries it in its metadata; the model's own
  (``TaskModule.preprocessing``) fills in what the data did not say.
- :class:`InferenceModel`: the ``nn.Module`` the tools run and export: the data's normalization (uint8 images
  through ``datamodules.transforms.normalize_batch``, series and features by their mean and standard deviation),
  then the task's ``predict_tensors``, its outputs as a tuple in :attr:`InferenceModel.output_names` order.

:class:`~recipes.tools.predictor.Predictor` reads inputs and answers with it.

>>> Preprocessing.from_dict({"input": "image", "in_channels": 1, "img_size": [8, 8]}).img_size
(8, 8)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from datamodules.transforms import normalize_batch
from zoo.tasks import TaskModule

#: The input kinds a task names (``TaskModule.preprocessing()["input"]``).
INPUT_KINDS = ("image", "series", "tokens", "text", "features")


class InputError(ValueError):
    """Input that does not fit the model; the message names what is expected."""


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What turns raw input into the model's input, as the training data did at evaluation time.

    Args:
        input: ``"image"``, ``"series"``, ``"tokens"``, ``"text"`` or ``"features"``.
        in_channels: image channels (1: grayscale, 3: RGB).
        img_size: image ``(height, width)``.
        mean: normalization of float inputs: per channel of images ([0, 1] units), per feature of series.
        std: the matching standard deviations.
        classes: class names by index (``None`` when the data named none).
        vocab: the characters of a text model's vocabulary, in id order.
        extra: what else the data recorded (a forecaster's column names, ...), shown in the metadata.
    """

    input: str = "features"
    in_channels: int | None = None
    img_size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    classes: tuple[str, ...] | None = None
    vocab: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input not in INPUT_KINDS:
            raise ValueError(f"Unknown input kind {self.input!r}; one of {', '.join(INPUT_KINDS)}")
        if (self.mean is None) != (self.std is None) or (self.mean is not None and len(self.mean) != len(self.std)):
            raise ValueError(f"give mean and std of the same length, or neither: {self.mean}, {self.std}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (lists for tuples); what the ``zoo.preprocessing`` metadata of an exported file holds."""
        out = {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "extra"}
        out = {key: list(value) if isinstance(value, tuple) else value for key, value in out.items()}
        return {**dict(self.extra), **out}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Preprocessing:
        """The inverse of :meth:`to_dict`; keys it does not know are kept in ``extra``."""
        known = {field.name for field in dataclasses.fields(cls)} - {"extra"}
        kwargs = {key: value for key, value in values.items() if key in known and value is not None}
        for key in ("img_size", "mean", "std", "classes"):
            if key in kwargs:
                value = kwargs[key]
                kwargs[key] = (value, value) if key == "img_size" and isinstance(value, int) else tuple(value)
        if "classes" in kwargs:
            kwargs["classes"] = tuple(map(str, kwargs["classes"]))
        extra = {key: value for key, value in values.items() if key not in known}
        return cls(**kwargs, extra=extra)


def resolve_preprocessing(model: TaskModule, data: Mapping[str, Any] | None) -> Preprocessing:
    """The model's own description of its input (``model.preprocessing()``), completed by the data's.

    The model's sizes win (they are what the network reads); the data's class names are dropped when their count is
    not the model's (a head replaced for fine-tuning).
    """
    own = model.preprocessing()
    merged = {**dict(data or {}), **own}
    classes, num_classes = merged.get("classes"), getattr(model, "num_classes", None)
    if classes is not None and num_classes is not None and len(classes) != num_classes:
        merged.pop("classes")
    return Preprocessing.from_dict(merged)


class InferenceModel(nn.Module):
    """The data's normalization, then the task's ``predict_tensors``: the module every tool runs and exports.

    Images arrive as uint8 ``(B, C, H, W)`` at the model's size; series as float ``(B, T, F)`` and features as
    float ``(B, F)`` in the data's original units; token ids as long ``(B, T)``.

    Args:
        model: a zoo model (any :class:`~zoo.tasks.TaskModule`).
        preprocessing: the input kind and normalization.
    """

    def __init__(self, model: TaskModule, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.model, self.preprocessing = model.eval(), preprocessing
        pre = preprocessing
        mean = torch.tensor(pre.mean if pre.mean is not None else [0.0], dtype=torch.float32)
        std = torch.tensor(pre.std if pre.std is not None else [1.0], dtype=torch.float32)
        # Not `mean`/`std`: an exported graph names its constants after them, and outputs (a forecast's std) too.
        self.register_buffer("input_mean", mean, persistent=False)
        self.register_buffer("input_std", std, persistent=False)
        self.normalizes = pre.mean is not None and pre.input in ("series", "features")
        self.vocab_size = int(getattr(model, "vocab_size", 0) or 0)  # the token ids random test inputs may hold
        self.example_input_array = self._example(model)
        self.output_names = tuple(sorted(model.predict_tensors(self.normalize(self.example_input_array))))

    def _example(self, model: TaskModule) -> torch.Tensor:
        example = model.example_input_array
        example = example[0] if isinstance(example, (tuple, list)) else example
        if self.preprocessing.input == "image":
            return torch.full(example.shape, 128, dtype=torch.uint8)
        return example.detach().clone()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the model reads it: uint8 images normalized, series and features standardized."""
        if self.preprocessing.input == "image":
            return normalize_batch(x, self.input_mean, self.input_std)
        if self.normalizes:
            return (x - self.input_mean) / self.input_std  # (..., F) over the last axis
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model.predict_tensors(self.normalize(x))
        return tuple(outputs[name] for name in self.output_names)


__all__ = ["INPUT_KINDS", "InferenceModel", "Preprocessing", "resolve_preprocessing"]
