"""One parametrised test per contract, over every registered preset: a new preset is tested with no new test."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

import zoo

ALL_MODELS = zoo.list_models()
CLASSIFIERS = zoo.list_models(task="image_classification")
#: Largest side used for training tests; bigger presets are rebuilt for this size when they allow it.
MAX_TRAIN_SIDE = 64


def _small_model(name: str, num_classes: int = 5) -> tuple[zoo.TaskModule, tuple[int, ...]]:
    """The preset (classifiers with few classes), rebuilt for a small input when its own is large (fast CPU tests)."""
    info = zoo.model_info(name)
    channels, *spatial = info.input_size
    overrides: dict = {"num_classes": num_classes} if info.task == "image_classification" else {}
    if max(spatial) > MAX_TRAIN_SIDE:
        spatial = [MAX_TRAIN_SIDE] * len(spatial)
        overrides["img_size"] = MAX_TRAIN_SIDE if len(spatial) == 2 else tuple(spatial)
    return zoo.create_model(name, **overrides), (channels, *spatial)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_parameter_count_matches_metadata(name):
    model = zoo.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == zoo.model_info(name).num_params


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_forward_shapes_and_classifier_contract(name):
    model, input_size = _small_model(name)
    model.eval()
    x = torch.randn(2, *input_size)
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features)
    assert model(x).shape == (2, 5)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.num_classes == 7 and model.hparams.num_classes == 7


@pytest.mark.parametrize("name", ALL_MODELS)
def test_wrong_input_shape_names_the_expected_shape(name):
    model = zoo.create_model(name)
    channels = zoo.model_info(name).input_size[0]
    bad = torch.randn(2, channels + 1, *zoo.model_info(name).input_size[1:])
    with pytest.raises(ValueError, match=rf"expects \w+ of shape \(B, {channels}, "):
        model(bad)


def _overfit_batch(name: str, model: zoo.TaskModule, input_size: tuple[int, ...]) -> tuple:
    """8 inputs, their targets, and the loss to get under: near zero for classes, 5% of the noise for denoisers."""
    generator = torch.Generator().manual_seed(1)
    if zoo.model_info(name).task == "denoising":
        coarse = torch.rand(8, input_size[0], 4, 4, generator=generator)  # smooth images: structure under the noise
        clean = F.interpolate(coarse, size=input_size[1:], mode="bilinear", align_corners=False)
        noisy = model.add_noise(clean, generator)
        return noisy, clean, 0.05 * F.mse_loss(noisy, clean).item()
    return torch.randn(8, *input_size, generator=generator), torch.arange(8) % 4, 0.05


@pytest.mark.parametrize("name", ALL_MODELS)
def test_overfits_one_small_batch(name):
    """Backward works, gradients are finite, and the model can drive its task's loss on 8 samples near zero."""
    torch.manual_seed(0)
    model, input_size = _small_model(name, num_classes=4)
    x, target, bound = _overfit_batch(name, model, input_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(150):
        optimizer.zero_grad()
        loss = model.compute_loss(model(x), target)
        loss.backward()
        optimizer.step()
        if loss.item() < 0.4 * bound:
            break
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert loss.item() < bound, f"{name} did not overfit 8 samples: loss {loss.item():.4f}, bound {bound:.4f}"


@pytest.mark.parametrize("name", [n for n in ALL_MODELS if zoo.model_info(n).num_params < 3_000_000])
def test_checkpoint_round_trip_with_weights_only(name, tmp_path):
    """Hyperparameters are primitives: the checkpoint loads with weights_only=True and rebuilds the same model."""
    classifier = zoo.model_info(name).task == "image_classification"
    model = zoo.create_model(name, lr=0.05, **({"num_classes": 3} if classifier else {"noise_std": 0.2}))
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["num_classes" if classifier else "noise_std"] == (3 if classifier else 0.2)
    restored = type(model).load_from_checkpoint(tmp_path / "model.ckpt", weights_only=True)
    assert restored.hparams == model.hparams and restored.hparams.lr == 0.05
    x = torch.randn(2, *zoo.model_info(name).input_size)
    model.eval(), restored.eval()
    torch.testing.assert_close(restored(x), model(x))


@pytest.mark.parametrize("cls", [zoo.MLP, zoo.SimpleCNN, zoo.CNN])
@pytest.mark.parametrize("input_size", [(1, 28, 28), (3, 32, 32)])
def test_basic_families_size_themselves_from_the_input(cls, input_size):
    channels, height, _ = input_size
    model = cls(num_classes=7, in_channels=channels, img_size=height).eval()
    assert model(torch.randn(2, *input_size)).shape == (2, 7)
    assert model.example_input_array.shape == (2, *input_size)
