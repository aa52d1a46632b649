"""Generated scientific fields: each generator's defining property measured independently (the power spectrum's slope,
the heat equation's exact decay, conservation and smoothing, spots where they were placed), reproducibility per
(seed, split, index), training-only augmentation by the square's symmetries, argument errors, and a denoiser that
trains on the data, alone and through the CLI."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import quiet_trainer

import zoo
from datamodules import DATAMODULES, ScientificFieldsDataModule, get_datamodule_class
from datamodules.fields import (
    FIELD_KINDS,
    draw_blobs,
    draw_field,
    evolve_heat,
    gaussian_random_field,
    heat_initial_condition,
    heat_snapshot,
    microscopy_blobs,
    render_blobs,
    sample_seed,
)
from recipes.console import main as zoo_main
from zoo.tasks.denoising import Denoiser

GENERATORS = {
    "gaussian_field": lambda size, g: gaussian_random_field(size, 3.0, g),
    "heat": lambda size, g: heat_snapshot(size, 1e-3, g),
    "blobs": lambda size, g: microscopy_blobs(size, 10, g),
}


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _radial_power(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean power ``|FFT|^2`` of images ``(N, H, H)`` per integer ``|k|`` (cycles per side), ``k = 1 .. H // 2``."""
    size = images.shape[-1]
    power = torch.fft.fft2(images.double() - images.double().mean(dim=(-2, -1), keepdim=True)).abs() ** 2
    k = np.fft.fftfreq(size, 1 / size)
    radius = np.rint(np.hypot(*np.meshgrid(k, k, indexing="ij"))).astype(int)  # (H, H) ring of each mode
    mean_power = power.mean(0).numpy()
    rings = np.arange(1, size // 2 + 1)
    return rings, np.array([mean_power[radius == ring].mean() for ring in rings])


def _high_frequency_share(image: torch.Tensor) -> float:
    """Fraction of an image's non-mean spectral energy (ring averages) at ``|k| > size / 8``."""
    rings, power = _radial_power(image.reshape(1, *image.shape[-2:]))
    return power[rings > image.shape[-1] / 8].sum() / power.sum()


# --- generators ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", FIELD_KINDS)
@pytest.mark.parametrize("size", [16, 17])
def test_generators_give_float32_unit_range_images_that_follow_the_seed(kind, size):
    make = GENERATORS[kind]
    image = make(size, _g(0))
    assert image.shape == (1, size, size) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1 and image.std() > 0.02
    if kind != "blobs":  # min-max rescaled per image
        assert image.min().item() == 0 and image.max().item() == pytest.approx(1)
    assert torch.equal(make(size, _g(0)), image)
    assert not torch.equal(make(size, _g(1)), image)


@pytest.mark.parametrize("exponent", [2.0, 3.0, 4.0])
def test_gaussian_field_power_spectrum_falls_as_k_to_minus_exponent(exponent):
    generator = _g(7)
    images = torch.cat([gaussian_random_field(64, exponent, generator) for _ in range(8)])
    rings, power = _radial_power(images)
    fitted = (rings >= 2) & (rings <= 24)
    slope = np.polyfit(np.log(rings[fitted]), np.log(power[fitted]), 1)[0]
    assert slope == pytest.approx(-exponent, abs=0.15)


def test_heat_equation_is_solved_exactly_for_a_fourier_mode_and_a_point_source():
    size, time = 32, 2e-3
    x = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    y, x = torch.meshgrid(x, x, indexing="ij")
    for ny, nx in ((1, 0), (2, 3), (0, 5)):  # cos(2 pi (nx x + ny y)) decays by exp(-4 pi^2 (nx^2 + ny^2) t)
        mode = torch.cos(2 * math.pi * (nx * x + ny * y))
        expected = math.exp(-4 * math.pi**2 * (nx**2 + ny**2) * time) * mode
        torch.testing.assert_close(evolve_heat(mode, time), expected, rtol=0, atol=1e-10)
    source = torch.zeros(64, 64, dtype=torch.float64)
    source[20, 40] = 1.0
    spread = evolve_heat(source, time)  # a Gaussian of variance 2 t per axis, mass kept
    offsets = (torch.arange(64, dtype=torch.float64) - torch.tensor([[20.0], [40.0]])) / 64  # (2, 64) y and x
    offsets = offsets - offsets.round()  # periodic distance to the source
    weights = spread / spread.sum()
    assert spread.sum().item() == pytest.approx(1.0)
    assert (weights.sum(1) * offsets[0] ** 2).sum().item() == pytest.approx(2 * time, rel=0.01)
    assert (weights.sum(0) * offsets[1] ** 2).sum().item() == pytest.approx(2 * time, rel=0.01)


def test_heat_snapshots_keep_the_mean_and_lose_high_frequencies_with_time():
    initial = heat_initial_condition(48, _g(3))
    assert initial.shape == (48, 48) and initial.dtype == torch.float32 and initial.std() > 0.1
    times = [0.0, 1e-4, 5e-4, 2e-3, 8e-3]
    for time in times:
        evolved = evolve_heat(initial, time)
        assert evolved.mean().item() == pytest.approx(initial.mean().item(), rel=1e-5)  # heat is conserved
    torch.testing.assert_close(evolve_heat(initial, 0.0), initial, rtol=0, atol=1e-5)
    torch.testing.assert_close(evolve_heat(evolve_heat(initial, 1e-3), 2e-3), evolve_heat(initial, 3e-3))
    shares = [_high_frequency_share(heat_snapshot(48, time, _g(3))) for time in times]
    assert all(later < earlier for earlier, later in itertools.pairwise(shares)), shares
    assert shares[-1] < 0.01 * shares[0]
    snapshot = heat_snapshot(48, 1e-3, _g(3))  # the same initial condition, evolved, then min-max rescaled
    evolved = evolve_heat(initial, 1e-3)
    torch.testing.assert_close(snapshot[0], (evolved - evolved.min()) / (evolved.max() - evolved.min()))
    with pytest.raises(ValueError, match="time must be a finite number >= 0, got -1"):
        evolve_heat(initial, -1)


def test_blobs_are_bright_where_placed_and_cover_more_area_with_higher_count():
    size = 64
    blobs = draw_blobs(12, _g(5))
    image = microscopy_blobs(size, 12, _g(5))
    torch.testing.assert_close(image, render_blobs(size, blobs))
    centers = (blobs.centers * size).floor().long().clamp(max=size - 1)  # the pixel holding each center
    peaks = image[0, centers[:, 0], centers[:, 1]]
    assert (peaks >= (blobs.background + 0.7 * blobs.brightness).clamp(max=1)).all()
    axis = (torch.arange(size) + 0.5) / size
    distance = torch.cdist(torch.cartesian_prod(axis, axis), blobs.centers).amin(1).view(size, size)
    far = distance > 6 * blobs.sigmas.max()
    assert far.any() and torch.allclose(image[0][far], torch.tensor(blobs.background), atol=1e-4)
    one = draw_blobs(1, _g(2))  # a single spot against the 2-d Gaussian formula
    (cy, cx), sigma = one.centers[0].tolist(), one.sigmas[0].item()
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    gaussian = one.background + one.brightness[0] * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    torch.testing.assert_close(render_blobs(size, one)[0], gaussian.clamp(0, 1))
    bright = [
        np.mean([(microscopy_blobs(size, count, _g(s)) > 0.3).float().mean().item() for s in range(6)])
        for count in (3, 15, 60)
    ]
    assert bright[0] < bright[1] < bright[2], bright
    assert microscopy_blobs(8, 0, _g(0)).std() == 0  # no spots: the background alone


def test_generator_arguments_are_checked():
    with pytest.raises(ValueError, match="size must be an integer of at least 2 pixels, got 1"):
        gaussian_random_field(1, 3.0, _g(0))
    with pytest.raises(ValueError, match="exponent must be a finite number"):
        gaussian_random_field(8, math.nan, _g(0))
    with pytest.raises(ValueError, match=r"count must be an integer >= 0, got 2\.5"):
        microscopy_blobs(8, 2.5, _g(0))
    with pytest.raises(ValueError, match="square field, got 4x6"):
        evolve_heat(torch.zeros(4, 6), 1.0)
    with pytest.raises(ValueError, match="Unknown field kind 'vortex'; choose from gaussian_field, heat, blobs"):
        draw_field("vortex", 8, _g(0))


def test_sample_seeds_are_distinct_per_index_and_split():
    seeds = {
        (split, seed): [sample_seed(seed, split, i) for i in range(5000)]
        for split in ("train", "val", "test")
        for seed in (0, 1, -3)
    }
    for values in seeds.values():
        assert len(set(values)) == 5000 and all(0 <= value < 2**32 for value in values)
    assert len({value for values in seeds.values() for value in values[:100]}) == 9 * 100
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        sample_seed(0, "dev", 0)


# --- datamodule ------------------------------------------------------------------------------------------------------
def _dm(**kwargs) -> ScientificFieldsDataModule:
    args = dict(img_size=16, train_size=12, val_size=6, test_size=6, batch_size=4) | kwargs
    dm = ScientificFieldsDataModule(**args)
    dm.setup()
    return dm


def _whole(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return dataset.__getitems__(range(len(dataset)))


def test_datamodule_exposes_what_a_denoiser_links_and_labels_the_kinds():
    assert DATAMODULES["ScientificFields"] is ScientificFieldsDataModule
    assert get_datamodule_class("ScientificFields") is ScientificFieldsDataModule
    dm = _dm(kinds=["blobs", "heat"])
    sizes = {key: getattr(dm, key) for key in Denoiser.data_links}
    assert sizes == {"in_channels": 1, "img_size": (16, 16), "mean": (0.0,), "std": (1.0,)}
    assert dm.num_classes == 2 and dm.class_names == dm.classes == ["blobs", "heat"]
    assert dm.preprocessing == {
        "input": "image",
        "in_channels": 1,
        "img_size": [16, 16],
        "mean": [0.0],
        "std": [1.0],
        "classes": ["blobs", "heat"],
    }
    assert dm.state_dict()["preprocessing"] == dm.preprocessing
    images, labels = _whole(dm.datasets["val"])
    assert images.shape == (6, 1, 16, 16) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert labels.tolist() == [0, 1, 0, 1, 0, 1] and images.min() >= 0 and images.max() <= 1
    # blobs keep their dim background (no per-image rescaling); heat snapshots span [0, 1]
    assert all(image.min() > 0.01 for image in images[labels == 0])
    assert all(image.min() == 0 and image.max() == 1 for image in images[labels == 1])
    for index in range(6):  # each sample is its kind drawn from the sample's own seed
        expected = draw_field(dm.classes[index % 2], 16, _g(sample_seed(0, "val", index)))
        assert torch.equal(images[index], expected)
    assert {len(d) for d in dm.datasets.values()} == {12, 6} and len(dm.datasets["train"]) == 12
    assert len(list(dm.test_dataloader())) == len(list(dm.predict_dataloader())) == 2


def test_samples_are_a_function_of_seed_split_and_index():
    dm, again, other = _dm(augment=False), _dm(augment=False), _dm(augment=False, seed=1)
    for split in ("train", "val", "test"):
        images, labels = _whole(dm.datasets[split])
        assert torch.equal(_whole(again.datasets[split])[0], images)
        assert not torch.equal(_whole(other.datasets[split])[0], images)
        assert labels.tolist() == [index % 3 for index in range(len(images))]
    assert not torch.equal(_whole(dm.datasets["val"])[0], _whole(dm.datasets["test"])[0])
    assert not torch.equal(_whole(dm.datasets["val"])[0], _whole(dm.datasets["train"])[0][:6])
    direct = torch.stack([dm.datasets["val"][index][0] for index in range(6)])
    loaded = torch.cat([images for images, _ in dm.val_dataloader()])
    assert torch.equal(loaded, direct)
    bigger = _dm(augment=False, train_size=50)  # a sample does not depend on the split's length
    assert torch.equal(bigger.datasets["train"][11][0], dm.datasets["train"][11][0])
    shuffled = torch.cat([images for images, _ in dm.train_dataloader()])  # every training image, in some order
    plain = _whole(dm.datasets["train"])[0]
    assert sorted(shuffled.sum((1, 2, 3)).tolist()) == pytest.approx(sorted(plain.sum((1, 2, 3)).tolist()))


def test_a_worker_process_gives_the_same_samples():
    dm = _dm(augment=False, num_workers=1)
    loaded = torch.cat([images for images, _ in dm.val_dataloader()])
    assert torch.equal(loaded, _whole(dm.datasets["val"])[0])


def _symmetries(image: torch.Tensor) -> list[torch.Tensor]:
    """The eight images of a square under its symmetries: four rotations, each also mirrored."""
    rotations = [image, image.transpose(-2, -1).flip(-1), image.flip(-2).flip(-1), image.transpose(-2, -1).flip(-2)]
    return rotations + [rotation.flip(-2) for rotation in rotations]


def test_augmentation_flips_and_rotates_training_images_only():
    torch.manual_seed(0)
    augmented, plain = _dm(augment=True, train_size=24), _dm(augment=False, train_size=24)
    for split in ("val", "test"):
        assert torch.equal(_whole(augmented.datasets[split])[0], _whole(plain.datasets[split])[0])
    images, labels = _whole(augmented.datasets["train"])
    originals, original_labels = _whole(plain.datasets["train"])
    assert torch.equal(labels, original_labels)
    found = []
    for image, original in zip(images, originals, strict=True):
        matches = [i for i, candidate in enumerate(_symmetries(original)) if torch.equal(image, candidate)]
        assert matches, "an augmented image is not a flip or rotation of its original"
        found.append(matches[0])
    assert len(set(found)) >= 5  # many of the eight symmetries occur, identity included or not
    again = _whole(augmented.datasets["train"])[0]  # redrawn on each read
    assert not torch.equal(again, images)


def test_arguments_are_checked_with_clear_errors():
    with pytest.raises(ValueError, match=r"Unknown field kind 'gausian_field'\. Did you mean 'gaussian_field'\? "):
        ScientificFieldsDataModule(kinds=["gausian_field"])
    with pytest.raises(ValueError, match="Valid kinds: gaussian_field, heat, blobs"):
        ScientificFieldsDataModule(kinds=["heat", "vortex"])
    with pytest.raises(ValueError, match=r"got the string 'heat'; pass \['heat'\]"):
        ScientificFieldsDataModule(kinds="heat")
    with pytest.raises(ValueError, match="one or more distinct names"):
        ScientificFieldsDataModule(kinds=["heat", "heat"])
    with pytest.raises(ValueError, match="one or more distinct names"):
        ScientificFieldsDataModule(kinds=[])
    for size in (3, 16.0, True):
        with pytest.raises(ValueError, match="img_size must be an integer side of at least 4 pixels"):
            ScientificFieldsDataModule(img_size=size)
    with pytest.raises(ValueError, match="val_size must be a positive integer, got 0"):
        ScientificFieldsDataModule(val_size=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        ScientificFieldsDataModule(batch_size=0)
    with pytest.raises(ValueError, match=r"exponent_range must be a \(low, high\) pair of numbers with 0.0 <= low"):
        ScientificFieldsDataModule(exponent_range=(4.0, 2.0))
    with pytest.raises(ValueError, match="time_range must be a"):
        ScientificFieldsDataModule(time_range=(-1e-3, 1e-3))
    with pytest.raises(ValueError, match=r"count_range must be a .* of integers"):
        ScientificFieldsDataModule(count_range=(2.5, 10))
    with pytest.raises(ValueError, match="count_range must be a"):
        ScientificFieldsDataModule(count_range=(5,))
    with pytest.raises(ValueError, match="seed must be an integer"):
        ScientificFieldsDataModule(seed=1.5)
    with pytest.raises(RuntimeError, match="setup"):
        ScientificFieldsDataModule().train_dataloader()
    assert ScientificFieldsDataModule(count_range=[3, 3], exponent_range=[2, 2]).ranges["count_range"] == (3, 3)


# --- training --------------------------------------------------------------------------------------------------------
def test_a_denoiser_trains_on_the_fields():
    dm = ScientificFieldsDataModule(img_size=16, train_size=12, val_size=4, test_size=4, batch_size=4)
    model = zoo.create_model("ircnn", width=16, **{key: getattr(dm, key) for key in Denoiser.data_links})
    before = [parameter.detach().clone() for parameter in model.parameters()]
    trainer = quiet_trainer(max_steps=3, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, dm)
    assert trainer.global_step == 3
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    metrics = trainer.callback_metrics
    assert math.isfinite(metrics["train/loss"]) and 5 < metrics["val/psnr_input"] < 20


def test_the_cli_links_the_fields_into_a_denoiser():
    data = ["--data", "ScientificFields", "--data.img_size=16", "--data.train_size=8", "--data.val_size=4"]
    data += ["--data.test_size=4", "--data.batch_size=4", "--data.count_range=[2, 8]", "--model.init_args.width=8"]
    cli = zoo_main(
        ["fit", "--model", "ircnn", *data, "--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false"]
    )
    assert cli.model.in_channels == 1 and cli.model.img_size == (16, 16)
    assert tuple(cli.model.hparams.mean) == (0.0,) and cli.datamodule.ranges["count_range"] == (2, 8)
    assert "test/psnr" in cli.trainer.callback_metrics  # fast_dev_run: one batch of fit, then test
