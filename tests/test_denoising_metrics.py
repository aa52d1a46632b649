"""Noise models, per-image and pooled metrics against independent computations, classical baselines, panels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import quiet_trainer
from scipy.signal import convolve2d
from torch.utils.data import DataLoader, TensorDataset

import zoo
from callbacks import DenoisingPanelLogger
from zoo.tasks.denoising import gaussian_noise, poisson_noise, salt_and_pepper_noise


def _images(n: int = 12, side: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 1, 4, 4, generator=generator), size=(side, side), mode="bilinear")


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gaussian_noise_has_the_asked_std_per_image_and_is_reproducible():
    clean = torch.full((3, 1, 64, 64), 0.5)
    std = torch.tensor([0.05, 0.1, 0.3]).view(3, 1, 1, 1)
    noise = gaussian_noise(clean, std, _seeded()) - clean
    torch.testing.assert_close(noise.flatten(1).std(1), std.flatten(), rtol=0.05, atol=0)
    assert noise.mean().abs() < 0.01
    torch.testing.assert_close(gaussian_noise(clean, std, _seeded()), gaussian_noise(clean, std, _seeded()))


def test_poisson_noise_is_photon_counts_with_variance_clean_over_peak():
    clean = torch.cat([torch.full((1, 1, 128, 128), 0.2), torch.full((1, 1, 128, 128), 0.8)])
    peak = 25.0
    noisy = poisson_noise(clean, peak, _seeded())
    counts = noisy * peak
    torch.testing.assert_close(counts, counts.round())  # whole photons
    torch.testing.assert_close(noisy.flatten(1).mean(1), torch.tensor([0.2, 0.8]), rtol=0.03, atol=0)
    # shot noise grows with brightness: variance = clean / peak
    torch.testing.assert_close(noisy.flatten(1).var(1), torch.tensor([0.2, 0.8]) / peak, rtol=0.06, atol=0)
    assert poisson_noise(clean, 400.0, _seeded()).var() < noisy.var()  # more photons, less noise
    assert (poisson_noise(torch.zeros(1, 1, 8, 8), peak, _seeded()) == 0).all()  # no light, no counts


def test_salt_and_pepper_hits_the_asked_fraction_with_black_and_white_only():
    clean = torch.full((2, 1, 100, 100), 0.4)
    noisy = salt_and_pepper_noise(clean, torch.tensor([0.05, 0.3]).view(2, 1, 1, 1), _seeded())
    hit = noisy != clean
    torch.testing.assert_close(hit.float().flatten(1).mean(1), torch.tensor([0.05, 0.3]), rtol=0.1, atol=0)
    assert set(noisy[hit].unique().tolist()) == {0.0, 1.0}
    assert (noisy[hit] == 1).float().mean() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize(
    ("noise", "expected"),
    [("gaussian", "gaussian_noise"), ("poisson", "poisson_noise"), ("salt_pepper", "salt_and_pepper_noise")],
)
def test_the_task_adds_the_configured_noise(noise, expected):
    model = zoo.create_model("ircnn", noise=noise, noise_std=0.2, peak=10.0, amount=0.2)
    clean = _images()
    reference = {"gaussian_noise": (gaussian_noise, 0.2), "poisson_noise": (poisson_noise, 10.0)}
    function, level = reference.get(expected, (salt_and_pepper_noise, 0.2))
    torch.testing.assert_close(model.add_noise(clean, _seeded(4)), function(clean, level, _seeded(4)))


def test_blind_noise_spreads_levels_in_training_and_evaluates_at_the_full_level():
    clean = torch.full((64, 1, 32, 32), 0.5)
    blind = zoo.create_model("ircnn", noise="poisson", peak=10.0, blind=True)
    per_image_var = (blind.add_noise(clean, _seeded()) - clean).flatten(1).var(1)
    peaks = 0.5 / per_image_var  # variance = clean / peak
    assert peaks.min() > 10 * 0.8 and peaks.max() < 160 * 1.25 and peaks.max() > 80  # log-uniform on [10, 160]
    full = (blind.add_noise(clean, _seeded(), blind=False) - clean).flatten(1).var(1)
    torch.testing.assert_close(full, torch.full((64,), 0.05), rtol=0.15, atol=0)
    with pytest.raises(ValueError, match="Unknown noise 'speckle'"):
        zoo.create_model("ircnn", noise="speckle")
    with pytest.raises(ValueError, match="amount"):
        zoo.create_model("ircnn", noise="salt_pepper", amount=1.5)


def _ssim(estimate: np.ndarray, clean: np.ndarray) -> float:
    """SSIM of Wang et al. (2004) written from the formula: an 11-tap Gaussian window of std 1.5, borders reflected,
    the mean of the whole map (as torchmetrics; scikit-image crops the borders instead)."""
    taps = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    window = np.outer(taps, taps) / taps.sum() ** 2

    def local_mean(image: np.ndarray) -> np.ndarray:
        return convolve2d(np.pad(image, 5, mode="reflect"), window, mode="valid")

    mx, my = local_mean(estimate), local_mean(clean)
    vx, vy = local_mean(estimate**2) - mx**2, local_mean(clean**2) - my**2
    cov = local_mean(estimate * clean) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return float((((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())


def test_logged_mean_psnr_and_ssim_equal_per_image_computations():
    """val/psnr_mean is the mean of each image's PSNR and val/ssim the mean of each image's SSIM; val/psnr stays
    pooled, so it differs from the per-image mean."""
    torch.manual_seed(0)
    model = zoo.create_model("ircnn", img_size=16, noise_std=0.2, noise_seed=5).eval()
    clean = _images(10)
    loader = DataLoader(TensorDataset(clean, torch.zeros(10, dtype=torch.long)), batch_size=4)
    metrics = quiet_trainer().validate(model, loader, verbose=False)[0]

    outputs, inputs = [], []
    with torch.no_grad():
        for batch_idx, start in enumerate(range(0, 10, 4)):
            batch = clean[start : start + 4]
            noisy = batch + torch.randn(batch.shape, generator=_seeded(5 * 1_000_003 + batch_idx)) * 0.2
            outputs.append(model(noisy).clamp(0, 1))
            inputs.append(noisy.clamp(0, 1))
    for suffix, estimate in (("", torch.cat(outputs)), ("_input", torch.cat(inputs))):
        mse = ((estimate - clean) ** 2).flatten(1).mean(1)
        psnr_each = 10 * torch.log10(1 / mse)
        ssim_each = [_ssim(e[0].double().numpy(), c[0].double().numpy()) for e, c in zip(estimate, clean, strict=True)]
        assert metrics[f"val/psnr_mean{suffix}"] == pytest.approx(psnr_each.mean().item(), abs=1e-3)
        assert metrics[f"val/psnr{suffix}"] == pytest.approx(10 * math.log10(1 / mse.mean().item()), abs=1e-3)
        assert metrics[f"val/ssim{suffix}"] == pytest.approx(float(np.mean(ssim_each)), abs=1e-4)
    assert metrics["val/psnr_mean"] != pytest.approx(metrics["val/psnr"], abs=1e-3)
    assert metrics["val/ssim_input"] < 0.9


@pytest.mark.parametrize("method", ["gaussian", "median", "tv", "nl_means"])
def test_classical_denoisers_beat_the_noisy_input_on_smooth_images(method):
    noise = "salt_pepper" if method == "median" else "gaussian"
    strength = {"gaussian": 1.0, "median": 1.0, "tv": 0.1, "nl_means": 0.1}[method]
    denoiser = zoo.ClassicalDenoiser(method, strength, img_size=32, noise=noise, noise_std=0.15, amount=0.1)
    loader = DataLoader(TensorDataset(_images(6, side=32), torch.zeros(6, dtype=torch.long)), batch_size=3)
    metrics = quiet_trainer().test(denoiser, loader, verbose=False)[0]
    assert metrics["test/psnr"] > metrics["test/psnr_input"] + 3
    assert metrics["test/ssim"] > metrics["test/ssim_input"]


def test_classical_denoiser_matches_scipy_and_refuses_to_train():
    from scipy.ndimage import gaussian_filter

    x = _images(2, side=16)
    out = zoo.ClassicalDenoiser("gaussian", 1.5, img_size=16)(x)
    expected = np.stack([gaussian_filter(image[0].numpy(), 1.5, mode="nearest", truncate=4.0) for image in x])
    np.testing.assert_allclose(out[:, 0].numpy(), expected, atol=1e-5)
    colour = torch.rand(2, 3, 16, 16)
    for method in ("gaussian", "tv", "nl_means"):  # colour images keep their channel layout
        assert zoo.ClassicalDenoiser(method, 0.1, in_channels=3, img_size=16)(colour).shape == colour.shape
    with pytest.raises(ValueError, match="Unknown method 'bm3d'"):
        zoo.ClassicalDenoiser("bm3d")
    with pytest.raises(RuntimeError, match="no weights to train"):
        zoo.ClassicalDenoiser().configure_optimizers()


def test_panel_logger_shows_noisy_denoised_clean_and_error_rows():
    model = zoo.create_model("ircnn", img_size=16, noise_std=0.2)
    clean = _images(8)
    loader = DataLoader(TensorDataset(clean, torch.zeros(8, dtype=torch.long)), batch_size=8)
    panel = DenoisingPanelLogger(num_samples=3, error_gain=2.0, seed=1)
    quiet_trainer(max_epochs=1, limit_train_batches=1, callbacks=[panel]).fit(model, loader, loader)
    assert panel.last_panel.shape == (3, 4 * 16 + 5 * 2, 3 * 16 + 4 * 2)  # 4 rows of 3 images, 2-pixel padding
    noisy_expected = clean[:3] + torch.randn(clean[:3].shape, generator=_seeded(1)) * 0.2
    torch.testing.assert_close(panel.noisy, noisy_expected)  # the same noise every epoch, at the full level
    with torch.no_grad():
        estimate = model.eval()(panel.noisy).clamp(0, 1)
    error_tile = panel.last_panel[0, 3 * 18 + 2 : 3 * 18 + 18, 2:18]
    torch.testing.assert_close(error_tile, ((estimate[0, 0] - clean[0, 0]).abs() * 2).clamp(0, 1))
    with pytest.raises(ValueError, match="error_gain"):
        DenoisingPanelLogger(error_gain=0)
