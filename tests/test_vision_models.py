"""ResNet, DenseNet, EfficientNet, ViT and the volumetric CNN against torchvision and timm.

Parameter counts are compared on the meta device (no memory, no init cost). Parity tests copy the weights of a
randomly initialized reference, with its norm parameters and running statistics randomized too (at their defaults
a BatchNorm in eval mode is nearly the identity and would hide a wrongly mapped key), and compare eval outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
import torchvision
from timm.layers import resample_abs_pos_embed
from torch import nn

import zoo
from zoo import efficientnet, resnet, vit
from zoo.efficientnet import MBConv
from zoo.resnet import BasicBlock, PreActBlock, PreActBottleneck
from zoo.vit import Block, resample_pos_embed
from zoo.volumetric import CNN3D

FAMILIES = ("resnet", "densenet", "efficientnet", "vit", "volumetric")
PRESETS = [name for family in FAMILIES for name in zoo.list_models(family=family)]

REFERENCES = {
    **{name: ("torchvision", name) for name in ("resnet18", "resnet34", "resnet50", "resnet101")},
    "densenet121": ("torchvision", "densenet121"),
    "efficientnet_b0": ("torchvision", "efficientnet_b0"),
    **{name: ("timm", name) for name in ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224")},
}


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give norm weights, biases, running statistics and embeddings random values (conv/linear weights already are)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if not tensor.is_floating_point():
                continue
            if tensor.ndim == 1 and name.endswith(("weight", "running_var")):
                tensor.copy_(0.5 * torch.rand(tensor.shape, generator=generator) + 0.75)
            elif tensor.ndim == 1 or "token" in name or "pos_embed" in name:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
    return model


# --- registry metadata and parameter counts --------------------------------------------------------------------


def test_all_families_are_registered() -> None:
    assert {zoo.model_info(name).family for name in PRESETS} == set(FAMILIES)
    assert len(PRESETS) >= 16


@pytest.mark.parametrize("name", PRESETS)
def test_parameter_count_matches_registry(name: str) -> None:
    info = zoo.model_info(name)
    with torch.device("meta"):
        model = zoo.create_model(name)
    assert num_params(model) == info.num_params
    assert tuple(model.example_input_array.shape[1:]) == info.input_size


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_parameter_count_matches_reference(name: str) -> None:
    library, reference_name = REFERENCES[name]
    with torch.device("meta"):
        if library == "torchvision":
            reference = torchvision.models.get_model(reference_name, weights=None)
        else:
            reference = timm.create_model(reference_name, pretrained=False)
        model = zoo.create_model(name)
    assert num_params(model) == num_params(reference) == zoo.model_info(name).num_params


def test_efficientnet_scaling_matches_torchvision_b1() -> None:
    with torch.device("meta"):
        reference = torchvision.models.efficientnet_b1(weights=None)
        model = zoo.create_model("efficientnet_b0", width_mult=1.0, depth_mult=1.1, img_size=240)
    assert num_params(model) == num_params(reference) == 7_794_184


# --- converter parity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "batch"), [("resnet18", 2), ("resnet50", 1)])
def test_resnet_from_torchvision_parity(name: str, batch: int) -> None:
    torch.manual_seed(0)
    reference = randomize_(torchvision.models.get_model(name, weights=None)).eval()
    model = zoo.create_model(name).eval()
    model.load_state_dict(resnet.from_torchvision(reference.state_dict()))
    x = torch.randn(batch, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=0)


def test_efficientnet_from_torchvision_parity() -> None:
    torch.manual_seed(0)
    reference = randomize_(torchvision.models.efficientnet_b0(weights=None)).eval()
    model = zoo.create_model("efficientnet_b0").eval()
    model.load_state_dict(efficientnet.from_torchvision(reference.state_dict()))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=0)


def test_vit_from_timm_parity() -> None:
    torch.manual_seed(0)
    reference = randomize_(timm.create_model("vit_tiny_patch16_224", pretrained=False)).eval()
    model = zoo.create_model("vit_tiny_patch16_224").eval()
    model.load_state_dict(vit.from_timm(reference.state_dict()))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-4, rtol=0)


def test_vit_from_timm_refuses_unsupported_variants() -> None:
    with torch.device("meta"):
        reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, init_values=1e-5)
    with pytest.raises(ValueError, match="ls1"):
        vit.from_timm(reference.state_dict())


# --- ViT position embedding ------------------------------------------------------------------------------------


def test_pos_embed_resampling_is_identity_at_the_built_size() -> None:
    pos_embed = torch.randn(1, 1 + 8 * 8, 16)
    assert resample_pos_embed(pos_embed, (8, 8), (8, 8)) is pos_embed


def test_pos_embed_resampling_matches_timm() -> None:
    torch.manual_seed(0)
    pos_embed = torch.randn(1, 1 + 8 * 8, 16)
    for new_grid in [(12, 10), (4, 6)]:  # up- and down-sampling (antialiased)
        ours = resample_pos_embed(pos_embed, new_grid, (8, 8))
        reference = resample_abs_pos_embed(pos_embed, list(new_grid), [8, 8], num_prefix_tokens=1)
        assert ours.shape == (1, 1 + new_grid[0] * new_grid[1], 16)
        torch.testing.assert_close(ours, reference)
        torch.testing.assert_close(ours[:, 0], pos_embed[:, 0])  # the class token's entry is kept


def test_vit_forward_at_another_size_matches_timm_dynamic_img_size() -> None:
    torch.manual_seed(0)
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, dynamic_img_size=True)
    reference = randomize_(reference).eval()
    model = zoo.create_model("vit_tiny_patch16_224", depth=2).eval()
    model.load_state_dict(vit.from_timm(reference.state_dict()))
    x = torch.randn(1, 3, 160, 256)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, reference(x), atol=1e-4, rtol=0)
    assert model.pos_embed.shape == (1, 1 + 14 * 14, 192)  # the stored embedding is unchanged


def test_vit_without_qkv_bias_builds() -> None:
    model = zoo.create_model("vit_tiny_patch4_32", depth=1, qkv_bias=False)
    assert model.blocks[0].attn.qkv.bias is None
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_vit_rejects_sizes_not_divisible_by_the_patch() -> None:
    model = zoo.create_model("vit_tiny_patch4_32", depth=1)
    assert model(torch.randn(2, 3, 48, 40)).shape == (2, 10)
    with pytest.raises(ValueError, match="divisible by patch_size 4"):
        model(torch.randn(2, 3, 30, 32))
    with pytest.raises(ValueError, match="not divisible"):
        zoo.create_model("vit_tiny_patch4_32", img_size=30)


# --- stochastic depth ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_block", "shape"),
    [
        (lambda rate: MBConv(16, 16, 6, 3, 1, drop_path=rate), (32, 16, 4, 4)),
        (lambda rate: Block(32, 4, drop_path=rate), (32, 5, 32)),
    ],
    ids=["mbconv", "vit_block"],
)
def test_stochastic_depth_is_identity_in_eval(make_block: Callable[[float], nn.Module], shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    dropped, plain = make_block(0.5), make_block(0.0)
    plain.load_state_dict(dropped.state_dict())
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(dropped.eval()(x), plain.eval()(x), atol=0, rtol=0)
        out = dropped.train()(x)
    # In training, samples whose residual branches were all dropped come out unchanged.
    unchanged = (out - x).flatten(1).abs().amax(1) == 0
    assert unchanged.any() and not unchanged.all()


def test_stochastic_depth_rates_grow_linearly() -> None:
    model = zoo.create_model("vit_tiny_patch4_32", drop_path_rate=0.3, depth=4)
    rates = [block.drop_path1.drop_prob for block in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    net = zoo.create_model("efficientnet_b0_cifar", drop_path_rate=0.2)
    blocks = [b for stage in net.stages for b in stage]
    rates = [b.drop_path.drop_prob for b in blocks if b.has_residual]
    assert rates == sorted(rates) and 0 < max(rates) < 0.2


# --- ResNet blocks ---------------------------------------------------------------------------------------------


def test_preact_block_orders_norm_act_before_each_conv() -> None:
    torch.manual_seed(0)
    block = randomize_(PreActBlock(8, 16, 2, nn.BatchNorm2d, nn.ReLU)).eval()
    x = torch.randn(2, 8, 10, 10)
    pre = torch.relu(block.norm1(x))
    expected = block.conv2(torch.relu(block.norm2(block.conv1(pre)))) + block.shortcut(pre)
    with torch.no_grad():
        out = block(x)
        torch.testing.assert_close(out, expected)
    assert block.norm1.num_features == 8  # the first norm sees the block input
    assert (out < 0).any()  # no activation after the sum, unlike the post-activation block

    same = randomize_(PreActBlock(8, 8, 1, nn.BatchNorm2d, nn.ReLU)).eval()
    with torch.no_grad():  # with matching shapes the shortcut is the raw input, not the pre-activated one
        expected = same.conv2(torch.relu(same.norm2(same.conv1(torch.relu(same.norm1(x)))))) + x
        torch.testing.assert_close(same(x), expected)


def test_post_activation_block_ends_with_the_activation() -> None:
    torch.manual_seed(0)
    block = randomize_(BasicBlock(8, 8, 1, nn.BatchNorm2d, nn.ReLU)).eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        expected = torch.relu(block.norm2(block.conv2(torch.relu(block.norm1(block.conv1(x))))) + x)
        torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize("block", ["basic", "bottleneck", "preact_basic", "preact_bottleneck"])
def test_zero_init_residual_makes_blocks_start_as_identity(block: str) -> None:
    torch.manual_seed(0)
    model = resnet.ResNet(
        num_classes=3, img_size=16, block=block, layers=(2, 1), widths=(4, 8), stem="cifar", zero_init_residual=True
    )
    second = model.stages[0][1]  # stride 1, same width: an identity shortcut
    x = torch.randn(2, 4 * second.expansion, 6, 6)
    expected = x if block.startswith("preact") else torch.relu(x)
    with torch.no_grad():
        torch.testing.assert_close(second(x), expected)


@pytest.mark.parametrize("name", ["resnet18_cifar", "preactresnet18_cifar"])
def test_cifar_stem_keeps_the_resolution(name: str) -> None:
    model = zoo.create_model(name, widths=(8, 8, 8, 8), stem_width=8)
    assert isinstance(model.stem.conv, nn.Conv2d) and model.stem.conv.stride == (1, 1)
    assert not hasattr(model.stem, "pool")
    assert model.stem(torch.randn(1, 3, 32, 32)).shape == (1, 8, 32, 32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet_rejects_unknown_block() -> None:
    with pytest.raises(ValueError, match="Unknown block"):
        resnet.ResNet(block="dense")  # type: ignore[arg-type]


def test_preact_bottleneck_projection_sees_the_preactivation() -> None:
    torch.manual_seed(0)
    block = randomize_(PreActBottleneck(8, 4, 2, nn.BatchNorm2d, nn.ReLU)).eval()
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        pre = torch.relu(block.norm1(x))
        branch = block.conv3(torch.relu(block.norm3(block.conv2(torch.relu(block.norm2(block.conv1(pre)))))))
        torch.testing.assert_close(block(x), branch + block.shortcut(pre))


# --- DenseNet --------------------------------------------------------------------------------------------------


def test_densenet_channels_grow_and_compress() -> None:
    model = zoo.create_model("densenet_bc40_cifar")
    # 24 + 6 * 12 = 96 -> 48; 48 + 72 = 120 -> 60; 60 + 72 = 132 features.
    assert model.num_features == 132
    assert [stage.conv.out_channels for stage in model.features if hasattr(stage, "conv")] == [48, 60]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# --- volumetric CNN --------------------------------------------------------------------------------------------


def test_cnn3d_input_contract() -> None:
    torch.manual_seed(0)
    model = zoo.create_model("volumetric_cnn_small", num_classes=4, channels=(4, 8))
    assert model.example_input_array.shape == (2, 1, 28, 28, 28)
    out = model(torch.randn(3, 1, 12, 20, 16))  # any volume size works
    assert out.shape == (3, 4)
    out.sum().backward()
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\)"):
        model(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\)"):
        model(torch.randn(2, 3, 8, 8, 8))


def test_cnn3d_hyperparameters_rebuild_the_model() -> None:
    model = CNN3D(num_classes=5, in_channels=2, img_size=(12, 16), volume_depth=6, channels=(4, 8))
    rebuilt = CNN3D(**model.hparams)
    assert rebuilt.example_input_array.shape == (2, 2, 6, 12, 16)
    assert num_params(rebuilt) == num_params(model)


# --- the classifier contract -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("preactresnet18_cifar", dict(widths=(8, 8, 8, 8))),
        ("densenet_bc40_cifar", dict(block_config=(2, 2, 2))),
        ("efficientnet_b0_cifar", dict(width_mult=0.25, depth_mult=0.25)),
        ("vit_tiny_patch4_32", dict(depth=2)),
    ],
)
def test_features_head_and_reset_classifier(name: str, overrides: dict) -> None:
    torch.manual_seed(0)
    model = zoo.create_model(name, **overrides).eval()
    x = torch.randn(2, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features)
    torch.testing.assert_close(model.forward_head(features), model(x))
    model.reset_classifier(7)
    assert model(x).shape == (2, 7)
    assert num_params(type(model)(**model.hparams)) == num_params(model)
