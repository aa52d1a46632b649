"""VGG: the textbook net's exact layout and count, and the torchvision-layout presets against torchvision.

Parity copies the weights of a randomly initialized torchvision VGG, with its BatchNorm parameters and running
statistics randomized (at their defaults an eval BatchNorm is nearly the identity and would hide a wrongly mapped key),
and compares eval outputs.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import zoo
from zoo import vgg

TORCHVISION = ("vgg11", "vgg11_bn", "vgg16", "vgg16_bn")


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomize_norms_(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(0.5 * torch.rand(module.weight.shape, generator=generator) + 0.75)
                module.running_var.copy_(0.5 * torch.rand(module.running_var.shape, generator=generator) + 0.75)
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
    return model


def test_textbook_layout_gives_the_stated_count() -> None:
    model = zoo.create_model("vgg_style_cifar")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [conv.out_channels for conv in convs] == [64] * 2 + [128] * 2 + [256] * 3 + [512] * 3
    assert all(conv.kernel_size == (3, 3) and conv.bias is not None for conv in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 4
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 10)]
    assert [m.p for m in model.pre_logits if isinstance(m, nn.Dropout)] == [0.5]
    # 10 convs with biases (7,635,264) + Linear(512, 512) (262,656) + Linear(512, 10) (5,130)
    assert num_params(model) == 7_635_264 + 262_656 + 5_130 == 7_903_050
    bn = zoo.create_model("vgg_style_bn_cifar")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.features) == 10
    assert num_params(bn) == 7_903_050 - 2_688 + 2 * 2_688  # conv biases out, BatchNorm weight and bias in
    assert num_params(zoo.create_model("vgg_style_bn_cifar", conv_bias=True)) == 7_908_426


def test_any_size_down_to_one_pixel_per_pool() -> None:
    model = zoo.create_model("vgg_style_cifar", widths=(8, 8, 8, 8), hidden_dims=(16,)).eval()
    assert model(torch.randn(2, 3, 16, 24)).shape == (2, 10)
    with pytest.raises(ValueError, match="at least 16"):
        model(torch.randn(2, 3, 8, 32))
    with pytest.raises(ValueError, match="too small for 4 max-pools"):
        zoo.create_model("vgg_style_cifar", img_size=8)


@pytest.mark.parametrize("name", TORCHVISION)
def test_parameter_count_equals_torchvision(name: str) -> None:
    with torch.device("meta"):
        reference = torchvision.models.get_model(name, weights=None)
        model = zoo.create_model(name)
    assert num_params(model) == num_params(reference) == zoo.model_info(name).num_params
    assert [type(m) for m in model.features] == [type(m) for m in reference.features]


@pytest.mark.parametrize("name", ["vgg11_bn", "vgg16"])
def test_from_torchvision_parity(name: str) -> None:
    torch.manual_seed(0)
    reference = randomize_norms_(torchvision.models.get_model(name, weights=None)).eval()
    model = zoo.create_model(name).eval()
    model.load_state_dict(vgg.from_torchvision(reference.state_dict()))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=0)


def test_from_torchvision_maps_another_class_count_and_refuses_other_models() -> None:
    with torch.device("meta"):
        state = vgg.from_torchvision(torchvision.models.vgg11(weights=None, num_classes=5).state_dict())
        model = zoo.create_model("vgg11", num_classes=5)
        resnet = torchvision.models.resnet18(weights=None)
    assert state["head.weight"].shape == (5, 4096) and "pre_logits.3.weight" in state
    model.load_state_dict(state, assign=True)  # strict: every key matched
    with pytest.raises(ValueError, match="no 'classifier"):
        vgg.from_torchvision(resnet.state_dict())
