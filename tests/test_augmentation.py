"""Augmentation presets: the existing ones draw exactly what they drew before the crop, colour and erasing options
were added; each new op changes the image, keeps uint8 and the shape, repeats under a seed, and erases with the
normalization mean."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from datamodules import AUGMENTATIONS, DigitsDataModule, ImageCSVDataModule, build_augmentation

CONFIGS = {"rgb32": (3, (32, 32), True), "grey28": (1, (28, 28), False), "rgb24x40": (3, (24, 40), True)}
# sha256 prefixes of 8 draws per preset (seed 1234) on a fixed noise image, recorded with the code as it was before
# `crop`, `color_jitter` and `erase_prob` existed (torch 2.14.1, torchvision 0.29.1): recipes trained with these
# presets must keep their numbers. Another torchvision may draw otherwise; the written-out pipeline below is then
# the check that still holds.
RECORDED = {
    ("standard", "rgb32"): "2b873232975fc6bc",
    ("standard", "grey28"): "110ee3adfb2f3159",
    ("standard", "rgb24x40"): "943a8e0e73a4954c",
    ("autoaugment", "rgb32"): "a09445c5183e8567",
    ("autoaugment", "grey28"): "c6c27d3f63d991ca",
    ("autoaugment", "rgb24x40"): "cca35b75909207f3",
    ("randaugment", "rgb32"): "b7eadc0c24ac2c7a",
    ("randaugment", "grey28"): "f5f4c38078db8722",
    ("randaugment", "rgb24x40"): "a9959790a2979cde",
    ("trivialaugment", "rgb32"): "fff0ebc29939b5ae",
    ("trivialaugment", "grey28"): "5c0948d481b25993",
    ("trivialaugment", "rgb24x40"): "fbcf53c8a33671d0",
}


def _noise(channels: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (channels, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _draws(transform: v2.Transform, image: torch.Tensor, seed: int, n: int = 8) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.stack([transform(image) for _ in range(n)])


@pytest.mark.parametrize(("name", "config"), sorted(RECORDED))
def test_existing_presets_draw_what_they_drew_before(name, config):
    channels, size, hflip = CONFIGS[config]
    out = _draws(build_augmentation(name, size, hflip), _noise(channels, size), seed=1234)
    assert hashlib.sha256(out.numpy().tobytes()).hexdigest()[:16] == RECORDED[name, config]


def _before(name: str, size: tuple[int, int], hflip: bool) -> v2.Compose:
    """The ops the presets were built from before the new options, written out."""
    ops = [v2.RandomCrop(size, padding=max(1, min(size) // 8), padding_mode="reflect")]
    ops += [v2.RandomHorizontalFlip()] if hflip else []
    policies = {"autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10), "randaugment": v2.RandAugment}
    policies["trivialaugment"] = v2.TrivialAugmentWide
    return v2.Compose(ops + ([policies[name]()] if name in policies else []))


@pytest.mark.parametrize(("name", "config"), sorted(RECORDED))
def test_existing_presets_equal_the_pipeline_they_were(name, config):
    """The same check without stored digests (they hold for this machine's torch and torchvision)."""
    channels, size, hflip = CONFIGS[config]
    image = _noise(channels, size, seed=7)
    assert torch.equal(
        _draws(build_augmentation(name, size, hflip), image, 11), _draws(_before(name, size, hflip), image, 11)
    )


def test_existing_presets_ignore_the_mean():
    """The mean only fills erased rectangles: a preset without erasing builds the same ops with or without it."""
    for name in ("standard", "autoaugment", "randaugment", "trivialaugment"):
        image = _noise(3, (16, 16))
        plain = _draws(build_augmentation(name, (16, 16)), image, seed=5)
        assert torch.equal(_draws(build_augmentation(name, (16, 16), mean=(0.1, 0.2, 0.3)), image, seed=5), plain)


# Each new op alone (on top of "none"), then as the preset that adds it to a crop and flip.
NEW_OPS = {
    "resized_crop": dict(crop="resized"),
    "color": dict(color_jitter=0.4),
    "erasing": dict(erase_prob=1.0),
}


@pytest.mark.parametrize("op", sorted(NEW_OPS))
@pytest.mark.parametrize("channels", [1, 3])
def test_each_new_op_changes_the_image_keeps_uint8_and_repeats_under_a_seed(op, channels):
    size = (24, 20)
    image = _noise(channels, size)
    transform = build_augmentation("none", size, hflip=False, **NEW_OPS[op])
    assert len(transform.transforms) == 1  # the op alone: no crop or flip to change the image instead
    out = _draws(transform, image, seed=3)
    assert out.shape == (8, channels, *size) and out.dtype == torch.uint8
    assert all(not torch.equal(draw, image) for draw in out)
    assert torch.equal(_draws(transform, image, seed=3), out)
    assert not torch.equal(_draws(transform, image, seed=4), out)


@pytest.mark.parametrize(
    ("name", "ops"),
    [
        ("resized_crop", [v2.RandomResizedCrop, v2.RandomHorizontalFlip]),
        ("color", [v2.RandomCrop, v2.RandomHorizontalFlip, v2.ColorJitter]),
        ("erasing", [v2.RandomCrop, v2.RandomHorizontalFlip, v2.RandomErasing]),
    ],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_new_presets(name, ops, channels):
    transform = build_augmentation(name, (16, 16))
    assert [type(op) for op in transform.transforms] == ops
    image = _noise(channels, (16, 16))
    out = _draws(transform, image, seed=0)
    assert out.shape == (8, channels, 16, 16) and out.dtype == torch.uint8
    assert torch.equal(_draws(transform, image, seed=0), out)
    assert name in AUGMENTATIONS


def test_keyword_options_compose_with_any_preset_in_a_fixed_order():
    transform = build_augmentation("randaugment", (16, 16), crop="resized", color_jitter=0.2, erase_prob=0.5)
    kinds = [type(op) for op in transform.transforms]
    assert kinds == [v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.ColorJitter, v2.RandAugment, v2.RandomErasing]
    assert transform.transforms[2].brightness == (0.8, 1.2) and transform.transforms[-1].p == 0.5
    assert [type(op) for op in build_augmentation("erasing", (16, 16), hflip=False, erase_prob=0.0).transforms] == [
        v2.RandomCrop
    ]
    assert build_augmentation("color", (16, 16)).transforms[-1].saturation == (0.6, 1.4)
    assert build_augmentation("resized_crop", (16, 16)).transforms[0].scale == (0.08, 1.0)
    for bad, match in [
        (dict(crop="center"), "crop must be"),
        (dict(color_jitter=1.0), "color_jitter must be"),
        (dict(erase_prob=1.5), "erase_prob must be"),
    ]:
        with pytest.raises(ValueError, match=match):
            build_augmentation("standard", (16, 16), **bad)


@pytest.mark.parametrize(("mean", "fill"), [((0.2, 0.4, 0.6), (51, 102, 153)), (None, (128, 128, 128))])
def test_erasing_fills_one_rectangle_with_the_mean_in_uint8(mean, fill):
    """v2's RandomErasing writes its value as given: on uint8 pixels the fill is the mean's uint8 colour."""
    erase = build_augmentation("none", (20, 24), erase_prob=1.0, mean=mean)
    image = torch.full((3, 20, 24), 255, dtype=torch.uint8)
    torch.manual_seed(0)
    for _ in range(10):
        out = erase(image)
        erased = (out != 255).all(0)  # (H, W): every channel changed
        rows, cols = erased.any(1).nonzero()[:, 0], erased.any(0).nonzero()[:, 0]
        assert len(rows) and len(cols)
        rectangle = torch.zeros_like(erased)
        rectangle[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
        assert torch.equal(erased, rectangle) and (out == 255).all(0).logical_xor(erased).all()
        assert torch.equal(out[:, erased], torch.tensor(fill, dtype=torch.uint8)[:, None].expand(3, int(erased.sum())))
        assert 0.02 * 480 - 10 <= erased.sum() <= 0.33 * 480 + 10  # v2's default 2-33 % of the area (rounded sides)


def test_in_memory_datamodule_erases_with_its_own_mean():
    dm = DigitsDataModule(augment="erasing")
    assert dm.augmentation.transforms[-1].value == [round(255 * DigitsDataModule.mean[0])]


def test_erased_pixels_normalize_to_zero_through_a_file_datamodule(tmp_path):
    """White images through ImageCSV's pipeline (decode, resize, augment on uint8, then normalize): every pixel is
    white or, where erased, the mean, which normalizes to 0 up to the uint8 rounding of the mean."""
    rows = []
    for index in range(4):
        Image.fromarray(np.full((16, 16, 3), 255, np.uint8)).save(tmp_path / f"{index}.png")
        rows.append(f"{index}.png,{index % 2}\n")
    (tmp_path / "images.csv").write_text("path,label\n" + "".join(rows))
    mean, std = (0.3, 0.5, 0.7), (0.2, 0.25, 0.3)
    options = dict(img_size=16, mean=mean, std=std, val_fraction=0.0, test_fraction=0.0, num_workers=0)
    dm = ImageCSVDataModule(str(tmp_path / "images.csv"), augment="erasing", **options)
    dm.setup("fit")
    white = ((1 - torch.tensor(mean)) / torch.tensor(std)).view(3, 1, 1)
    tolerance = 0.5 / 255 / min(std) + 1e-5
    torch.manual_seed(0)
    erased = 0
    for _ in range(10):
        for image, _label in dm.datasets["train"]:
            is_white = torch.isclose(image, white.expand_as(image), atol=1e-5).all(0)  # (H, W)
            is_zero = (image.abs() <= tolerance).all(0)
            assert (is_white | is_zero).all()
            erased += int(is_zero.sum())
    assert erased > 0  # p = 0.25 over 40 draws
