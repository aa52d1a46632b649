"""Shared vision layers: stochastic depth, squeeze-and-excitation, conv stacks, dilated stacks and upsampling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.layers import (
    Conv1dStack,
    ConvStack,
    DilatedConvStack,
    UpsampleBlock,
    get_norm_layer,
)

# --- ConvStack / Conv1dStack -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dims", "spatial", "expected"),
    [(1, (50,), (13,)), (2, (15, 16), (4, 4)), (3, (8, 9, 10), (2, 3, 3))],
)
def test_conv_stack_shapes_for_each_dimensionality(
    dims: int, spatial: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    stack = ConvStack(2, (4, 6, 8), dims=dims, strides=(1, 2, 2))
    out = stack(torch.randn(3, 2, *spatial))
    assert out.shape == (3, 8, *expected)  # each stride-2 layer rounds up: ceil(S / 4)
    assert stack.out_channels == 8
    conv_type = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    assert sum(isinstance(m, conv_type) for m in stack.modules()) == 3
    assert all(m.bias is None for m in stack.modules() if isinstance(m, conv_type))  # a norm follows each conv


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm", "groupnorm", "none"])
def test_conv1d_stack_on_sequences(norm: str) -> None:
    stack = Conv1dStack(3, (16, 32), kernel_size=5, strides=2, dilations=(1, 2), norm=norm)
    out = stack(torch.randn(4, 3, 101))
    assert out.shape == (4, 32, 26)
    out.sum().backward()


def test_norm_layers_per_dimensionality() -> None:
    assert isinstance(get_norm_layer("batchnorm", 1)(4), nn.BatchNorm1d)
    assert isinstance(get_norm_layer("batchnorm", 3)(4), nn.BatchNorm3d)
    assert isinstance(get_norm_layer("layernorm")(4), nn.LayerNorm)  # features (B, C)


@pytest.mark.parametrize("dims", [1, 2])
def test_layer_norm_over_channels_never_mixes_positions(dims: int) -> None:
    """A change at one position (a future time step) leaves every other position's output unchanged."""
    layer = get_norm_layer("layernorm", dims)(4)
    x = torch.randn(2, 4, *[6] * dims)
    changed = x.clone()
    changed[..., -1] += 10.0  # the last step (or column) only
    out, out_changed = layer(x), layer(changed)
    torch.testing.assert_close(out[..., :-1], out_changed[..., :-1])
    assert not torch.allclose(out[..., -1], out_changed[..., -1])
    per_position = out.movedim(1, -1)  # (B, *S, C): normalized over the channels at each position
    torch.testing.assert_close(per_position.mean(-1), torch.zeros(per_position.shape[:-1]), atol=1e-5, rtol=0)


def test_conv_stack_validates_arguments() -> None:
    with pytest.raises(ValueError, match="odd"):
        ConvStack(1, (4,), kernel_size=4)
    with pytest.raises(ValueError, match="strides"):
        ConvStack(1, (4, 8), strides=(1, 2, 2))
    with pytest.raises(ValueError, match="dims"):
        ConvStack(1, (4,), dims=4)  # type: ignore[arg-type]


# --- DilatedConvStack ------------------------------------------------------------------------------------------


def test_dilated_stack_keeps_size_and_adds_the_input() -> None:
    torch.manual_seed(0)
    stack = DilatedConvStack(8, dilations=(1, 2, 4)).eval()
    x = torch.randn(2, 8, 19, 23)
    out = stack(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x + stack.layers(x))


def test_dilated_stack_receptive_field() -> None:
    # Positive weights and no nonlinearity: the gradient of one output pixel is nonzero exactly on its receptive field.
    stack = DilatedConvStack(1, dilations=(1, 2, 4, 8), norm="none", act="identity", residual=False)
    for module in stack.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.constant_(module.weight, 1.0)
            nn.init.zeros_(module.bias)
    x = torch.zeros(1, 1, 64, 64, requires_grad=True)
    stack(x)[0, 0, 32, 32].backward()
    rows, cols = x.grad[0, 0].nonzero(as_tuple=True)
    assert stack.receptive_field == 31
    assert (rows.max() - rows.min() + 1).item() == (cols.max() - cols.min() + 1).item() == 31


# --- UpsampleBlock ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 4])
def test_upsample_block_scales_the_map(scale: int) -> None:
    block = UpsampleBlock(16, 8, scale_factor=scale)
    out = block(torch.randn(2, 16, 5, 7))
    assert out.shape == (2, 8, 5 * scale, 7 * scale)
    assert isinstance(block.up[0], nn.ConvTranspose2d)


def test_upsample_block_fuses_a_skip_connection() -> None:
    block = UpsampleBlock(32, 16, skip_channels=8, norm="groupnorm")
    out = block(torch.randn(2, 32, 4, 6), torch.randn(2, 8, 8, 12))
    assert out.shape == (2, 16, 8, 12)
    out.mean().backward()
    with pytest.raises(ValueError, match="skip"):
        block(torch.randn(2, 32, 4, 6))
    with pytest.raises(ValueError, match="skip"):
        block(torch.randn(2, 32, 4, 6), torch.randn(2, 8, 7, 12))
    with pytest.raises(ValueError, match="skip_channels=0"):
        UpsampleBlock(32, 16)(torch.randn(2, 32, 4, 6), torch.randn(2, 8, 8, 12))
