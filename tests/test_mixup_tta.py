"""Mixup, CutMix and test-time augmentation of every image classifier: the mixed images and targets against their
definitions, the loss against a hand computation, what training logs while mixing, and the averaged class
probabilities of ``tta`` against the views computed here, in Python and through ``zoo predict``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import quiet_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import zoo
from datamodules import DigitsDataModule
from datamodules.transforms import normalize_batch
from recipes.tools.predict import main as predict
from recipes.tools.predictor import Predictor
from zoo.tasks import ImageClassifier

NUM_CLASSES = 4


class PointwiseNet(ImageClassifier):
    """1x1 convolutions and global average pooling: a mirror image has the same logits (flip-invariant)."""

    fixed_input_size = False

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = 1, img_size: int = 8, **task_args) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, img_size=img_size, **task_args)
        self.features = nn.Sequential(nn.Conv2d(in_channels, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, H, W) -> (B, 8)


def _cnn(**kwargs) -> zoo.SimpleCNN:
    """A small conv-pool-FC net for 1x8x8 images, without dropout (its outputs depend on position and side)."""
    return zoo.SimpleCNN(
        num_classes=NUM_CLASSES, in_channels=1, img_size=8, channels=(4,), hidden_dim=16, dropout=0.0, **kwargs
    )


def _batch(size: int = 8, height: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and targets whose neighbours (the pairs that mixing makes, first with last) differ."""
    generator = torch.Generator().manual_seed(1)
    return torch.randn(size, 1, height, height, generator=generator), torch.arange(size) % NUM_CLASSES


def _one_hot(target: torch.Tensor) -> torch.Tensor:
    return F.one_hot(target, NUM_CLASSES).float()


# --- mixup and CutMix ---------------------------------------------------------------------------------------------
def test_mixup_targets_are_convex_combinations_of_two_one_hot_rows():
    model = _cnn(mixup_alpha=0.4)
    x, y = _batch()
    torch.manual_seed(0)
    mixed, target = model.mix_batch(x, y)
    assert target.shape == (8, NUM_CLASSES) and target.dtype == torch.float32
    torch.testing.assert_close(target.sum(-1), torch.ones(8))
    lam = target[0, y[0]].item()  # the weight of each image's own class (neighbours differ in class)
    assert 0 < lam < 1
    partner = y.roll(1)  # image i is mixed with image i - 1
    torch.testing.assert_close(target, lam * _one_hot(y) + (1 - lam) * _one_hot(partner))
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.roll(1, 0))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_mixup_loss_equals_the_hand_computation(label_smoothing):
    """``lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b)``; with label smoothing, the mixed target smoothed."""
    model = _cnn(mixup_alpha=0.4, label_smoothing=label_smoothing)
    x, y = _batch()
    torch.manual_seed(3)
    loss = model.step((x, y), 0, "train").loss
    torch.manual_seed(3)  # the same draw of lam
    mixed, target = model.mix_batch(x, y)
    lam = target[0, y[0]].item()
    logits = model(mixed)
    if label_smoothing == 0:
        expected = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y.roll(1))
    else:
        smoothed = (1 - label_smoothing) * target + label_smoothing / NUM_CLASSES
        expected = -(smoothed * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(loss, expected)
    unmixed = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
    assert abs(loss.item() - unmixed.item()) > 1e-3  # the step did mix


def test_cutmix_pastes_a_box_and_weights_the_target_by_its_area():
    model = _cnn(cutmix_alpha=1.0)
    x, y = _batch(size=4, height=16)
    for seed in range(20):  # a draw whose box is neither empty nor the whole image
        torch.manual_seed(seed)
        mixed, target = model.mix_batch(x, y)
        inside = mixed != x  # (B, 1, H, W): random pixels differ from their neighbour's everywhere
        if 0 < inside[0].sum() < 16 * 16:
            break
    rows, cols = inside[0, 0].any(1).nonzero().squeeze(1), inside[0, 0].any(0).nonzero().squeeze(1)
    box = torch.zeros(16, 16, dtype=torch.bool)
    box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    assert torch.equal(inside, box.expand_as(inside))  # one rectangle, the same in every image
    partner = x.roll(1, 0)
    assert torch.equal(mixed[inside], partner[inside]) and torch.equal(mixed[~inside], x[~inside])
    area = box.float().mean().item()
    expected = (1 - area) * _one_hot(y) + area * _one_hot(y.roll(1))
    torch.testing.assert_close(target, expected)


def test_validation_and_test_are_never_mixed_and_mix_prob_is_the_share_of_mixed_batches():
    model = _cnn(mixup_alpha=1.0, cutmix_alpha=1.0).eval()
    x, y = _batch()
    unmixed = F.cross_entropy(model(x), y)
    for split in ("val", "test"):
        output = model.step((x, y), 0, split)
        torch.testing.assert_close(output.loss, unmixed)
        assert torch.equal(output.values["target"], y)
    half = _cnn(mixup_alpha=1.0, mix_prob=0.5)
    mixed = sum(half.mix_batch(x, y)[1].is_floating_point() for _ in range(400))
    assert 150 < mixed < 250
    assert not _cnn(mixup_alpha=1.0, mix_prob=0.0).mixes and not _cnn().mixes


def _fit(model: ImageClassifier) -> dict[str, float]:
    x, y = _batch(size=32)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    trainer = quiet_trainer(max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(model, loader, loader)
    return {key: float(value) for key, value in trainer.callback_metrics.items()}


def test_training_logs_its_loss_but_no_accuracy_while_mixing(tmp_path):
    teacher = _cnn()
    plain = _fit(teacher)
    assert {"train/loss", "train/acc", "train/f1", "val/acc"} <= set(plain)
    mixing = _fit(_cnn(mixup_alpha=0.2, cutmix_alpha=1.0))
    assert {"train/loss", "val/loss", "val/acc", "val/f1"} <= set(mixing)
    assert not {"train/acc", "train/f1", "train/acc_top5"} & set(mixing)
    teacher.trainer.save_checkpoint(tmp_path / "teacher.ckpt")  # a distilled student logs the loss's parts still
    distilled = _fit(_cnn(mixup_alpha=0.2, teacher_checkpoint=str(tmp_path / "teacher.ckpt")))
    assert {"train/loss_hard", "train/loss_distill"} <= set(distilled) and "train/acc" not in distilled


def _train(model: ImageClassifier, batch: tuple[torch.Tensor, torch.Tensor], steps: int) -> list[float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model.batch_loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_a_tiny_batch_is_overfitted_without_mixing_and_the_mixed_loss_decreases():
    batch = _batch()
    torch.manual_seed(0)
    assert _train(_cnn(), batch, 30)[-1] < 0.05
    torch.manual_seed(0)
    losses = _train(_cnn(mixup_alpha=0.4, cutmix_alpha=1.0), batch, 30)
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])  # not to 0: a blend of two classes stays uncertain


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="cutmix_alpha"):
        _cnn(cutmix_alpha=-0.5)
    with pytest.raises(ValueError, match="mixup_alpha"):
        _cnn(mixup_alpha=float("nan"))
    with pytest.raises(ValueError, match="mix_prob"):
        _cnn(mixup_alpha=0.2, mix_prob=1.5)
    with pytest.raises(ValueError, match="Did you mean 'flip_crop'"):
        _cnn(tta="flip-crop")
    model = _cnn()
    with pytest.raises(ValueError, match="Did you mean 'flip'"):
        model.tta = "flp"
    assert model.tta == "none"


def test_an_out_of_range_class_is_named_when_mixing():
    x, y = _batch()
    with pytest.raises(ValueError, match=r"targets must be in \[0, 3\]"):
        _cnn(mixup_alpha=0.2).mix_batch(x, y + 2)


# --- test-time augmentation ---------------------------------------------------------------------------------------
def test_tta_of_a_flip_invariant_model_equals_no_tta():
    model = PointwiseNet().eval()
    x, _ = _batch()
    with torch.no_grad():
        plain = model.predict_tensors(x)["probabilities"]
        model.tta = "flip"
        flipped = model.predict_tensors(x)["probabilities"]
    assert plain.std(0).max() > 1e-3  # the inputs give the model different answers
    torch.testing.assert_close(flipped, plain, rtol=0, atol=1e-6)


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` moved by ``(dy, dx)``: padded by 2 edge pixels, cropped back to its size."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    return padded[..., 2 + dy : 2 + dy + height, 2 + dx : 2 + dx + width]


def test_tta_averages_the_probabilities_of_the_views_at_test_and_predict_time():
    model = _cnn().eval()
    x, y = _batch()
    with torch.no_grad():
        plain = model(x).softmax(-1)
        flip = (plain + model(x.flip(-1)).softmax(-1)) / 2
        shifts = [(0, 0), (-2, 0), (2, 0), (0, -2), (0, 2)]
        views = [_shifted(image, dy, dx) for image in (x, x.flip(-1)) for dy, dx in shifts]
        flip_crop = torch.stack([model(view).softmax(-1) for view in views]).mean(0)
        diagonal = [_shifted(image, d, d) for image in (x, x.flip(-1)) for d in (0, -1, 1)]
        flip_shift = torch.stack([model(view).softmax(-1) for view in diagonal]).mean(0)
        model.tta = "flip"
        assert (model.predict_tensors(x)["probabilities"] - plain).abs().max() > 1e-3
        torch.testing.assert_close(model.predict_tensors(x)["probabilities"], flip)
        torch.testing.assert_close(model.predict_step((x, y), 0), flip)
        model.tta = "flip_shift"
        torch.testing.assert_close(model.predict_step((x,), 0), flip_shift)
        model.tta = "flip_crop"
        torch.testing.assert_close(model.predict_step((x,), 0), flip_crop)
        test = model.step((x, y), 0, "test")
        torch.testing.assert_close(test.loss, F.nll_loss(flip_crop.log(), y))
        torch.testing.assert_close(test.values["preds"].softmax(-1), flip_crop)
        torch.testing.assert_close(model.step((x, y), 0, "val").loss, F.cross_entropy(model(x), y))  # no views
        torch.testing.assert_close(model(x).softmax(-1), plain)  # the forward stays the logits


def test_zoo_predict_tta_flip_equals_the_python_average(tmp_path):
    """A checkpoint written after a few steps on the digits: ``zoo predict --tta flip`` on uint8 images saved as
    ``.npy`` gives the mean of the model's probabilities on the normalized images and their mirror images."""
    data = DigitsDataModule(batch_size=32)
    model = zoo.CNN(num_classes=10, in_channels=1, img_size=8, channels=(8, 8), lr=3e-3)
    trainer = quiet_trainer(max_steps=3, limit_val_batches=0)
    trainer.fit(model, data)
    checkpoint = tmp_path / "digits.ckpt"
    trainer.save_checkpoint(checkpoint)
    images = DigitsDataModule().load_arrays(train=False)[0][:6]  # (6, 1, 8, 8) uint8
    np.save(tmp_path / "digits.npy", images.numpy())

    results = predict(["--ckpt_path", str(checkpoint), "--inputs", str(tmp_path / "digits.npy"), "--tta", "flip"])
    restored = zoo.load_from_checkpoint(checkpoint)
    x = normalize_batch(images, torch.tensor(DigitsDataModule.mean), torch.tensor(DigitsDataModule.std))
    with torch.no_grad():
        plain = restored(x).softmax(-1)
        expected = (plain + restored(x.flip(-1)).softmax(-1)) / 2
    assert (expected - plain).abs().max() > 1e-3
    for row, result in zip(expected, results, strict=True):
        top = torch.tensor([entry["probability"] for entry in result["top_k"]])
        torch.testing.assert_close(top, row[[entry["index"] for entry in result["top_k"]]], rtol=1e-5, atol=1e-6)
    assert restored.tta == "none"  # --tta changes the loaded model, not the file

    with pytest.raises(SystemExit, match="Did you mean 'flip'"):
        predict(["--ckpt_path", str(checkpoint), "--inputs", str(tmp_path / "digits.npy"), "--tta", "flipp"])
    with pytest.raises(ValueError, match="image classifiers"):
        Predictor.from_model(zoo.create_model("transformer_cls_test"), tta="flip")
