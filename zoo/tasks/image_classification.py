"""Image-classification task base: the image contract (input checks, sizes) on top of the classification task.

An architecture subclasses :class:`ImageClassifier` and implements ``forward_features``, ``forward_head`` and
``reset_classifier``; how it trains is defined once in :class:`~zoo.tasks.classification.ClassificationTask`.
"""

from __future__ import annotations

from typing import Any

import torch

from zoo.tasks.classification import ClassificationTask, LossName


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class ImageClassifier(ClassificationTask):
    """Task base for image classification; subclasses build the network.

    Logs what :class:`~zoo.tasks.classification.ClassificationTask` logs (``{train,val,test}/acc``, ``/f1``, ...).
    Batches are ``(images (B, C, H, W), targets)``; targets may be class indices ``(B,)`` or class probabilities
    ``(B, C)`` (mixup/cutmix).

    Args:
        num_classes: number of output classes.
        in_channels: channels of the input images.
        img_size: input height and width (an int for square images).
        loss: ``"ce"`` (cross-entropy) or ``"focal"``.
        label_smoothing: label smoothing for either loss.
        focal_gamma: focusing parameter of the focal loss.
        **optim_args: optimizer and schedule, see :class:`~zoo.tasks.base.TaskModule`.
    """

    data_links = ("num_classes", "in_channels", "img_size")
    #: Whether the network needs exactly ``img_size`` (e.g. an MLP) or accepts any spatial size (global pooling).
    fixed_input_size: bool = True

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        img_size: int | tuple[int, int] = 32,
        loss: LossName = "ce",
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
        **optim_args: Any,
    ) -> None:
        super().__init__(
            num_classes=num_classes, loss=loss, label_smoothing=label_smoothing, focal_gamma=focal_gamma, **optim_args
        )
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        self.in_channels = in_channels
        self.img_size = _pair(img_size)
        self.example_input_array = torch.zeros(2, in_channels, *self.img_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, num_features)`` before the classifier."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the expected shape when ``x`` does not fit the network."""
        channels, (height, width) = self.in_channels, self.img_size
        ok = x.ndim == 4 and x.shape[1] == channels
        if ok and self.fixed_input_size:
            ok = tuple(x.shape[2:]) == (height, width)
        if not ok:
            spatial = f"{height}, {width}" if self.fixed_input_size else "H, W"
            raise ValueError(
                f"{type(self).__name__} expects input of shape (B, {channels}, {spatial}), got {tuple(x.shape)}"
            )

    def preprocessing(self) -> dict[str, Any]:
        return {"input": "image", "in_channels": self.in_channels, "img_size": list(self.img_size)}

    def example_batch(self, batch_size: int = 8, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Random inputs shaped like ``example_input_array`` and targets cycling over (up to) four classes."""
        x = torch.randn(batch_size, *self.example_input_array.shape[1:], generator=generator)
        return x, torch.arange(batch_size) % min(4, self.num_classes)
