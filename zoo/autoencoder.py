"""Convolutional autoencoders on the :class:`~zoo.tasks.Reconstruction` tasks: a plain one and a VAE.

- :class:`ConvAutoencoder`: stride-2 conv stages, a 1x1-conv bottleneck of ``latent_channels`` maps, and a decoder of
  stride-2 transposed convs. Fully convolutional: any input size.
- :class:`ConvVAE` (Kingma & Welling, 2014): the same encoder, flattened into the posterior's ``mu`` and ``logvar``
  of a ``latent_dim`` latent by one linear layer; the decoder starts from a linear layer back to the encoder's last
  maps. Inputs are of ``img_size``.

The common textbook autoencoder (three stride-2 stages, then transposed convs that double the size) returns 32x32 for
28x28 inputs. :class:`ConvDecoder` instead passes each transposed conv the size its encoder stage had
(``output_size``, which picks the output padding), so the reconstruction has exactly the input's size for every
height and width, 28 and 20 included.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoo.layers import ConvNormAct, ConvStack, get_act_layer, get_norm_layer
from zoo.registry import register_model
from zoo.tasks import Reconstruction, VariationalReconstruction


def encoder_sizes(size: Sequence[int], stages: int) -> list[tuple[int, int]]:
    """The spatial size before each of ``stages`` stride-2 stages (3x3, padding 1) and after the last.

    >>> encoder_sizes((28, 20), 3)
    [(28, 20), (14, 10), (7, 5), (4, 3)]
    """
    sizes = [(int(size[0]), int(size[1]))]
    for _ in range(stages):
        sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
    return sizes


class ConvEncoder(ConvStack):
    """Stride-2 3x3 conv-norm-act stages: ``(B, C, H, W) -> (B, widths[-1], ceil(H / 2^n), ceil(W / 2^n))``.

    >>> ConvEncoder(1, (8, 16))(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 16, 7, 7])
    """

    def __init__(self, in_channels: int, widths: Sequence[int], norm: str = "batchnorm", act: str = "relu") -> None:
        super().__init__(in_channels, tuple(widths), 2, kernel_size=3, strides=2, norm=norm, act=act)


class ConvDecoder(nn.Module):
    """Stride-2 3x3 transposed convs from ``widths[-1]`` channels back to ``out_channels`` logits (no activation).

    ``forward(h, output_size)`` returns ``(B, out_channels, *output_size)``: each transposed conv is given the size of
    the matching encoder stage (:func:`encoder_sizes`), which sets its output padding to 0 or 1.

    >>> ConvDecoder((8, 16), 1)(torch.zeros(2, 16, 7, 7), (28, 28)).shape
    torch.Size([2, 1, 28, 28])
    """

    def __init__(self, widths: Sequence[int], out_channels: int, norm: str = "batchnorm", act: str = "relu") -> None:
        super().__init__()
        channels = [*reversed(tuple(widths)), out_channels]  # deepest first
        has_norm = norm.lower() != "none"
        self.convs = nn.ModuleList()
        self.post = nn.ModuleList()
        for index, (cin, cout) in enumerate(itertools.pairwise(channels)):
            last = index == len(channels) - 2
            self.convs.append(nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, bias=last or not has_norm))
            self.post.append(
                nn.Identity() if last else nn.Sequential(get_norm_layer(norm, 2)(cout), get_act_layer(act)())
            )

    def forward(self, h: torch.Tensor, output_size: Sequence[int]) -> torch.Tensor:
        sizes = encoder_sizes(output_size, len(self.convs))[-2::-1]  # the encoder's sizes, deepest first
        for conv, post, size in zip(self.convs, self.post, sizes, strict=True):
            h = post(conv(h, output_size=size))  # (B, C', 2h - 1 or 2h, 2w - 1 or 2w): the encoder stage's size
        return h


class ConvAutoencoder(Reconstruction):
    """Conv encoder -> 1x1-conv bottleneck -> transposed-conv decoder; any input size, output of the input's size.

    Args:
        in_channels: image channels.
        img_size: nominal input size (summaries and export); any size works.
        widths: channels of each stride-2 encoder stage (the decoder mirrors them).
        latent_channels: channels of the bottleneck (the code has ``latent_channels * ceil(H / 2^n) * ceil(W / 2^n)``
            values for ``n = len(widths)`` stages).
        norm: norm name.
        act: activation name.
        **task_args: data statistics, loss, optimizer and schedule, see :class:`~zoo.tasks.Reconstruction`.

    >>> model = ConvAutoencoder(widths=(8, 16, 32), latent_channels=4).eval()
    >>> model(torch.rand(2, 1, 28, 28)).shape, model.forward_features(torch.rand(2, 1, 28, 28)).shape
    (torch.Size([2, 1, 28, 28]), torch.Size([2, 4, 4, 4]))
    """

    def __init__(
        self,
        in_channels: int = 1,
        img_size: int | tuple[int, int] = 28,
        widths: Sequence[int] = (32, 64, 128),
        latent_channels: int = 8,
        norm: str = "batchnorm",
        act: str = "relu",
        **task_args: Any,
    ) -> None:
        super().__init__(in_channels=in_channels, img_size=img_size, **task_args)
        widths = tuple(widths)
        self.encoder = ConvEncoder(in_channels, widths, norm, act)
        self.to_latent = nn.Conv2d(widths[-1], latent_channels, 1)
        self.from_latent = ConvNormAct(latent_channels, widths[-1], 1, norm=norm, act=act)
        self.decoder = ConvDecoder(widths, in_channels, norm, act)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The code: ``(B, C, H, W)`` in [0, 1] -> ``(B, latent_channels, ceil(H / 2^n), ceil(W / 2^n))``."""
        self.check_input(x)
        return self.to_latent(self.encoder(x))

    def reconstruct_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_latent(self.forward_features(x)), x.shape[-2:])


class ConvVAE(VariationalReconstruction):
    """Conv encoder -> linear ``mu``/``logvar`` -> ``z`` -> linear -> transposed-conv decoder, for ``img_size`` images.

    Args:
        in_channels: image channels.
        img_size: input size (the linear layers are sized for it).
        widths: channels of each stride-2 encoder stage (the decoder mirrors them).
        latent_dim: dimensions of the latent ``z``.
        norm: norm name.
        act: activation name.
        **task_args: KL weight and warmup, data statistics, loss, optimizer and schedule, see
            :class:`~zoo.tasks.VariationalReconstruction`.

    >>> model, x = ConvVAE(widths=(8, 16), latent_dim=4).eval(), torch.rand(2, 1, 28, 28)
    >>> model(x).shape, model.sample(3).shape, model.forward_features(x).shape
    (torch.Size([2, 1, 28, 28]), torch.Size([3, 1, 28, 28]), torch.Size([2, 4]))
    """

    def __init__(
        self,
        in_channels: int = 1,
        img_size: int | tuple[int, int] = 28,
        widths: Sequence[int] = (32, 64),
        latent_dim: int = 16,
        norm: str = "batchnorm",
        act: str = "relu",
        **task_args: Any,
    ) -> None:
        super().__init__(in_channels=in_channels, img_size=img_size, latent_dim=latent_dim, **task_args)
        widths = tuple(widths)
        self.feature_shape = (widths[-1], *encoder_sizes(self.img_size, len(widths))[-1])  # (C, h, w) of the maps
        flat = math.prod(self.feature_shape)
        self.encoder = ConvEncoder(in_channels, widths, norm, act)
        self.to_stats = nn.Linear(flat, 2 * latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, flat), get_act_layer(act)())
        self.decoder = ConvDecoder(widths, in_channels, norm, act)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the expected shape unless ``x`` is a float batch of ``img_size`` images."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, *self.img_size) or not x.is_floating_point():
            raise ValueError(
                f"{type(self).__name__} expects images of shape (B, {self.in_channels}, {self.img_size[0]}, "
                f"{self.img_size[1]}) and a floating dtype, got {x.dtype} {tuple(x.shape)}"
            )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        mu, logvar = self.to_stats(self.encoder(x).flatten(1)).chunk(2, dim=1)  # each (B, latent_dim)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z).view(-1, *self.feature_shape)  # (B, widths[-1], h, w)
        return self.decoder(h, self.img_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior's mean ``mu``: ``(B, C, H, W)`` in [0, 1] -> ``(B, latent_dim)``."""
        return self.encode(x)[0]


@register_model(
    ConvAutoencoder,
    input_size=(1, 28, 28),
    num_params=187_849,
    source="convolutional autoencoder (Masci et al. 2011), sized for MNIST",
    task="reconstruction",
)
def conv_autoencoder_mnist() -> dict[str, Any]:
    """Three stride-2 stages (32, 64, 128) to an 8x4x4 code, for 28x28 grayscale images."""
    return dict(in_channels=1, img_size=28, widths=(32, 64, 128), latent_channels=8)


@register_model(
    ConvVAE, input_size=(1, 28, 28), num_params=191_393, source="VAE, Kingma & Welling 2014", task="reconstruction"
)
def conv_vae_mnist() -> dict[str, Any]:
    """Two stride-2 stages (32, 64) to a 16-d latent, for 28x28 grayscale images."""
    return dict(in_channels=1, img_size=28, widths=(32, 64), latent_dim=16)
