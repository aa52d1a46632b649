"""One parametrised test per contract, over every registered preset: a new preset or task is tested with no new test.

Each task base supplies the example batch, the loss of a batch and the bound an overfitted model gets under; the
registry's input spec says what a preset's input looks like.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from conftest import quiet_trainer

import zoo
from zoo.tasks import ClassificationTask

ALL_MODELS = zoo.list_models()
#: Largest side used for training tests; bigger image presets are rebuilt for this size.
MAX_TRAIN_SIDE = 64
SMALL_MODELS = [name for name in ALL_MODELS if zoo.model_info(name).num_params < 3_000_000]
#: Overfitted here. Left out: torchvision's VGG layouts (133M-138M parameters, 102M in the first hidden layer), minutes
#: each on 2 CPU cores; their layers are the VGG-style presets', which are overfitted, and tests/test_vgg.py checks
#: their outputs against torchvision's. The ResNet-18 captioner (about a minute): its decoder is the digits
#: captioner's, overfitted here, and its trunk is torchvision's, trained in the ResNet presets. And the 31M-parameter
#: U-Nets (64 channels at full 64x64 resolution, over a minute each): their blocks are the `unet*_small` presets',
#: overfitted here, and tests/test_denoising.py checks the textbook one's parameter count and output shape.
NOT_TRAINED = ("caption_resnet18_transformer", "unet", "unet_attention", "unet_residual")
TRAINED_MODELS = [
    name for name in ALL_MODELS if zoo.model_info(name).num_params < 100_000_000 and name not in NOT_TRAINED
]


def _model_class(name: str) -> type:
    module, _, cls = zoo.preset_config(name)["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), cls)


CLASSIFIERS = [name for name in ALL_MODELS if issubclass(_model_class(name), ClassificationTask)]


def _small_model(name: str, **overrides) -> tuple[zoo.TaskModule, tuple[int, ...]]:
    """The preset (classifiers with 4 classes), rebuilt for a small input when its own is large (fast CPU tests)."""
    spec = zoo.model_info(name).input_spec
    shape = spec.shape
    if "num_classes" in _model_class(name).data_links:
        overrides.setdefault("num_classes", 4)
    if spec.kind in ("image", "volume") and max(shape[1:]) > MAX_TRAIN_SIDE:
        shape = (shape[0], *[MAX_TRAIN_SIDE] * (len(shape) - 1))
        overrides["img_size"] = MAX_TRAIN_SIDE if spec.kind == "image" else shape[1:]
    return zoo.create_model(name, **overrides), shape


def _input(spec: zoo.InputSpec, shape: tuple[int, ...], batch: int = 2) -> torch.Tensor:
    if spec.kind == "tokens":
        return torch.randint(0, spec.vocab_size, (batch, *shape))
    return torch.randn(batch, *shape)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_parameter_count_matches_metadata(name):
    model = zoo.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == zoo.model_info(name).num_params


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_preset_config_resolves_the_preset_without_building_it(name):
    config = zoo.preset_config(name, lr=0.05)
    model = zoo.create_model(name, lr=0.05)
    assert config["class_path"] == f"{type(model).__module__}.{type(model).__name__}"
    assert dict(_model_class(name)(**config["init_args"]).hparams) == dict(model.hparams)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_data_links_are_init_arguments(name):
    """What a task takes from data is an argument of every model of it (the CLI links exactly those)."""
    model = zoo.create_model(name)
    assert set(type(model).data_links) <= set(model.hparams)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_forward_shapes_and_classifier_contract(name):
    model, shape = _small_model(name, num_classes=5)
    model.eval()
    x = _input(zoo.model_info(name).input_spec, shape)
    features = model.forward_features(x)
    assert features.shape[-1] == model.num_features and features.shape[0] == 2
    logits = model(x)
    assert logits.shape == (*features.shape[:-1], 5)  # (2, 5), or (2, T, 5) per step
    model.reset_classifier(7)
    assert model(x).shape[-1] == 7 and model.num_classes == 7 and model.hparams.num_classes == 7


def _wrong_input(spec: zoo.InputSpec) -> tuple[torch.Tensor, str]:
    """An input that breaks the spec, and the start of what the error must say is expected."""
    if spec.kind == "tokens":
        return torch.randn(2, *spec.shape), r"expects token ids of shape \(B, T\) and dtype torch.long"
    if spec.kind == "features":
        (features,) = spec.shape
        return torch.randn(2, features + 1), rf"expects float features of shape \(B, {features}\)"
    if spec.kind == "series":
        steps, features = spec.shape
        return torch.randn(2, steps, features + 1), rf"expects float features of shape \(B, T, {features}\)"
    if spec.kind == "points":
        points, coordinates = spec.shape
        return torch.randn(2, points, coordinates + 1), rf"expects float points of shape \(B, N, {coordinates}\)"
    channels = spec.shape[0]
    return torch.randn(2, channels + 1, *spec.shape[1:]), rf"expects \w+ of shape \(B, {channels}, "


@pytest.mark.parametrize("name", ALL_MODELS)
def test_wrong_input_names_the_expected_shape_and_dtype(name):
    model = zoo.create_model(name)
    bad, expected = _wrong_input(zoo.model_info(name).input_spec)
    with pytest.raises(ValueError, match=expected):
        model(bad)


@pytest.mark.parametrize("name", TRAINED_MODELS)
def test_overfits_one_small_batch(name):
    """Backward works, gradients are finite, and the model drives its task's loss on 8 samples under the bound."""
    torch.manual_seed(0)
    model, _ = _small_model(name)
    batch = model.example_batch(8, torch.Generator().manual_seed(1))
    bound = model.overfit_bound(batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=model.overfit_lr)
    model.train()
    for _ in range(150):
        optimizer.zero_grad()
        loss = model.batch_loss(batch)
        loss.backward()
        optimizer.step()
        if loss.item() < 0.4 * bound:
            break
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert loss.item() < bound, f"{name} did not overfit 8 samples: loss {loss.item():.4f}, bound {bound:.4f}"


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_checkpoint_round_trip_with_weights_only(name, tmp_path):
    """Hyperparameters are primitives: the checkpoint loads with weights_only=True and rebuilds the same model."""
    model = zoo.create_model(name, lr=0.05)
    trainer = quiet_trainer(max_epochs=0)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["lr"] == 0.05
    restored = type(model).load_from_checkpoint(tmp_path / "model.ckpt", weights_only=True)
    assert restored.hparams == model.hparams
    spec = zoo.model_info(name).input_spec
    x = _input(spec, spec.shape)
    model.eval(), restored.eval()
    torch.testing.assert_close(restored(x), model(x))


@pytest.mark.parametrize("cls", [zoo.MLP, zoo.SimpleCNN, zoo.CNN])
@pytest.mark.parametrize("input_size", [(1, 28, 28), (3, 32, 32)])
def test_basic_families_size_themselves_from_the_input(cls, input_size):
    channels, height, _ = input_size
    model = cls(num_classes=7, in_channels=channels, img_size=height).eval()
    assert model(torch.randn(2, *input_size)).shape == (2, 7)
    assert model.example_input_array.shape == (2, *input_size)
