"""PointNet: a classifier of unordered point sets (Qi et al., "PointNet: Deep Learning on Point Sets for 3D
Classification and Segmentation", CVPR 2017), the classification network of its Figure 2.

Every point goes through the same MLP (1x1 convolutions with BatchNorm and ReLU), a symmetric function (max pooling
over points) makes the global feature, and an MLP head with dropout classifies it; the output cannot depend on the
order of the points. Optional T-Nets predict a ``3x3`` input transform and a ``k x k`` feature transform, each
initialized to (about) the identity; ``orthogonality_weight`` adds the paper's regularizer ``||I - A A^T||_F^2`` to the
training loss. Sizes follow the paper (per point 64, 64 | 64, 128, 1024; head 512, 256; dropout 0.3 (keep 0.7);
T-Nets 64, 128, 1024 | 512, 256); as in the reference PyTorch ports, layers followed by BatchNorm have no bias.

Input contract: float points ``(B, N, 3)``, one ``x, y, z`` row per point (the layout datasets store), for any ``N``;
``num_points`` is nominal, for summaries and export.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoo.registry import InputSpec, register_model
from zoo.tasks import ClassificationTask


def _shared_mlp(in_dim: int, dims: Sequence[int]) -> nn.Sequential:
    """The same MLP at every point of ``(B, C, N)``: ``[Conv1d 1x1 -> BatchNorm -> ReLU]`` per width."""
    layers: list[nn.Module] = []
    for dim in dims:
        layers += [nn.Conv1d(in_dim, dim, 1, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True)]
        in_dim = dim
    return nn.Sequential(*layers)


def _mlp(in_dim: int, dims: Sequence[int]) -> nn.Sequential:
    """``[Linear -> BatchNorm -> ReLU]`` per width."""
    layers: list[nn.Module] = []
    for dim in dims:
        layers += [nn.Linear(in_dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True)]
        in_dim = dim
    return nn.Sequential(*layers)


class TNet(nn.Module):
    """Predicts a ``k x k`` transform of a point set ``(B, k, N)``: shared MLP, max pooling, MLP, a linear layer
    whose bias is the identity matrix.

    The linear layer's weights start tiny (std 1e-4) rather than zero: the transform starts at the identity to about
    1e-3, and the layers before it get gradients from the first step (zero weights would block them for one step).

    >>> TNet(3, (8, 16), (8,))(torch.randn(2, 3, 5)).shape
    torch.Size([2, 3, 3])
    """

    def __init__(self, k: int, point_dims: Sequence[int], head_dims: Sequence[int]) -> None:
        super().__init__()
        self.k = k
        self.points = _shared_mlp(k, point_dims)
        self.head = _mlp(point_dims[-1], head_dims)
        self.out = nn.Linear(head_dims[-1] if head_dims else point_dims[-1], k * k)
        nn.init.normal_(self.out.weight, std=1e-4)
        with torch.no_grad():
            self.out.bias.copy_(torch.eye(k).flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.points(x).amax(dim=-1)  # (B, k, N) -> (B, point_dims[-1])
        return self.out(self.head(features)).view(-1, self.k, self.k)  # (B, k, k)


def orthogonality_loss(transform: torch.Tensor) -> torch.Tensor:
    """``||I - A A^T||_F^2`` averaged over a batch of ``(B, k, k)`` transforms (zero for rotations)."""
    eye = torch.eye(transform.shape[-1], device=transform.device, dtype=transform.dtype)
    return (eye - transform @ transform.transpose(1, 2)).square().sum(dim=(1, 2)).mean()


class PointNet(ClassificationTask):
    """PointNet classifier of point clouds ``(B, N, 3)``.

    Args:
        num_classes: number of output classes.
        num_points: nominal points per cloud (any number works; this one shapes the example input and export).
        point_dims: widths of the shared per-point MLP; the last is the global feature's size.
        head_dims: widths of the head's hidden layers.
        input_transform: predict a ``3x3`` transform of the input points (a T-Net).
        feature_transform: predict a ``k x k`` transform of the point features after this many per-point layers
            (the paper: 2, ``k = 64``); 0 for none.
        orthogonality_weight: weight of ``||I - A A^T||_F^2`` of each predicted transform in the training loss
            (the paper: 0.001 on the feature transform).
        dropout: dropout before the classifier.
        **task_args: loss, optimizer and schedule, see :class:`~zoo.tasks.ClassificationTask`.

    The T-Nets mirror the classifier: per point the first, second-to-last and last of ``point_dims``, then
    ``head_dims`` (the paper's 64, 128, 1024 | 512, 256 for its sizes).
    """

    data_links = ("num_classes", "num_points")

    def __init__(
        self,
        num_classes: int = 40,
        num_points: int = 1024,
        point_dims: Sequence[int] = (64, 64, 64, 128, 1024),
        head_dims: Sequence[int] = (512, 256),
        input_transform: bool = True,
        feature_transform: int = 0,
        orthogonality_weight: float = 0.0,
        dropout: float = 0.3,
        **task_args: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, **task_args)
        point_dims, head_dims = list(point_dims), list(head_dims)
        if num_points < 1 or len(point_dims) < 2 or min(point_dims) < 1 or (head_dims and min(head_dims) < 1):
            raise ValueError(
                f"need num_points >= 1, two or more positive point_dims and positive head_dims, got "
                f"{num_points}, {point_dims}, {head_dims}"
            )
        if not 0 <= feature_transform < len(point_dims):
            raise ValueError(
                f"feature_transform must be in [0, {len(point_dims) - 1}] (layers before it), got {feature_transform}"
            )
        if orthogonality_weight < 0 or not 0 <= dropout < 1:
            raise ValueError(
                f"need orthogonality_weight >= 0 and dropout in [0, 1), got {orthogonality_weight}, {dropout}"
            )
        self.num_points = num_points
        self.example_input_array = torch.zeros(2, num_points, 3)
        tnet_dims = (point_dims[0], point_dims[-2], point_dims[-1])
        self.input_tnet = TNet(3, tnet_dims, head_dims) if input_transform else None
        split = feature_transform
        self.points_before = _shared_mlp(3, point_dims[:split])
        width = point_dims[split - 1] if split else 3
        self.feature_tnet = TNet(width, tnet_dims, head_dims) if split else None
        self.points_after = _shared_mlp(width, point_dims[split:])
        self.num_features = point_dims[-1]
        self.pre_logits = nn.Sequential(*_mlp(self.num_features, head_dims), nn.Dropout(dropout))
        self.head = nn.Linear(head_dims[-1] if head_dims else self.num_features, num_classes)
        self._transforms: list[torch.Tensor] = []  # the last training forward's, for the regularizer

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the expected shape when ``x`` is not a batch of float point clouds."""
        if x.ndim != 3 or x.shape[-1] != 3 or x.shape[1] < 1 or not x.is_floating_point():
            raise ValueError(
                f"{type(self).__name__} expects float points of shape (B, N, 3) (N points of x, y, z), got {x.dtype} "
                f"{tuple(x.shape)}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The global feature ``(B, num_features)``: the maximum over points of the per-point features."""
        self.check_input(x)
        x = x.transpose(1, 2)  # (B, N, 3) -> (B, 3, N)
        transforms = []
        if self.input_tnet is not None:
            transforms.append(self.input_tnet(x))
            x = torch.bmm(transforms[-1], x)  # (B, 3, 3) @ (B, 3, N)
        x = self.points_before(x)  # (B, k, N)
        if self.feature_tnet is not None:
            transforms.append(self.feature_tnet(x))
            x = torch.bmm(transforms[-1], x)  # (B, k, k) @ (B, k, N)
        if self.training and self.hparams.orthogonality_weight:
            self._transforms = transforms
        return self.points_after(x).amax(dim=-1)  # (B, point_dims[-1], N) -> (B, point_dims[-1])

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.pre_logits(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def compute_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The classification loss, plus in training the transforms' orthogonality regularizer."""
        loss = super().compute_loss(logits, target)
        transforms, self._transforms = self._transforms, []
        if self.training and transforms:
            loss = loss + self.hparams.orthogonality_weight * sum(orthogonality_loss(t) for t in transforms)
        return loss

    def preprocessing(self) -> dict[str, Any]:
        return {"input": "series", "in_features": 3, "num_points": self.num_points}

    def example_batch(self, batch_size: int = 8, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Random clouds of up to 128 points (any number works) and targets cycling over (up to) four classes."""
        x = torch.randn(batch_size, min(self.num_points, 128), 3, generator=generator)
        return x, torch.arange(batch_size) % min(4, self.num_classes)


@register_model(
    PointNet,
    input_size=InputSpec((256, 3), kind="points"),
    num_params=39_313,
    source="PointNet (Qi et al., 2017) at a small width for the generated shapes",
    task="point_cloud_classification",
)
def pointnet_shapes() -> dict[str, Any]:
    """Per point 32, 64, 128; head 64; an input T-Net: the 8 generated shapes of 256 points (``shapes_pointnet``)."""
    return dict(num_classes=8, num_points=256, point_dims=(32, 64, 128), head_dims=(64,), input_transform=True)


@register_model(
    PointNet,
    input_size=InputSpec((1024, 3), kind="points"),
    num_params=3_473_969,
    source="PointNet classification network (Qi et al., CVPR 2017, Fig. 2): input and 64x64 feature T-Nets",
    task="point_cloud_classification",
)
def pointnet_modelnet40() -> dict[str, Any]:
    """The paper's sizes: per point 64, 64 | 64, 128, 1024; head 512, 256; both T-Nets; 40 classes, 1024 points."""
    return dict(
        num_classes=40,
        num_points=1024,
        point_dims=(64, 64, 64, 128, 1024),
        head_dims=(512, 256),
        input_transform=True,
        feature_transform=2,
        orthogonality_weight=0.001,
        dropout=0.3,
    )
