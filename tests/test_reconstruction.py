"""The reconstruction tasks and the autoencoders: exact output sizes, logged metrics and ELBO terms against independent
computations, prior samples, the image grid callback read back from TensorBoard, and answers through the tools."""

from __future__ import annotations

import io
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import QUIET, quiet_trainer
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

import zoo
from callbacks import ReconstructionGridLogger
from callbacks._utils import to_image_array
from recipes import mnist_vae
from recipes.tools.predictor import Predictor
from zoo.tasks.reconstruction import gaussian_kl

MEAN, STD = (0.3,), (0.4,)
TINY_AE = dict(widths=(4, 8, 8), latent_channels=2, mean=MEAN, std=STD)
TINY_VAE = dict(widths=(4, 8), latent_dim=3, mean=MEAN, std=STD)


def _pixels(n: int = 12, side: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth grey images in [0, 1] (bilinear 4x4 noise)."""
    coarse = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)


def _loader(pixels: torch.Tensor, batch_size: int = 5) -> DataLoader:
    """``(normalized images, labels)`` batches, as an image datamodule yields them."""
    return DataLoader(
        TensorDataset((pixels - MEAN[0]) / STD[0], torch.zeros(len(pixels), dtype=torch.long)), batch_size
    )


@pytest.mark.parametrize("size", [(28, 28), (32, 32), (20, 20), (21, 13), (1, 1)])
def test_autoencoder_output_has_exactly_the_input_size(size):
    model = zoo.ConvAutoencoder(**TINY_AE).eval()
    x = torch.rand(2, 1, *size)
    assert model(x).shape == x.shape
    code = [math.ceil(side / 8) for side in size]  # three stride-2 stages
    assert model.forward_features(x).shape == (2, 2, *code)


@pytest.mark.parametrize("side", [28, 32, 20])
def test_vae_output_has_exactly_its_image_size_and_names_it(side):
    model = zoo.ConvVAE(img_size=side, **TINY_VAE).eval()
    x = torch.rand(2, 1, side, side)
    assert model(x).shape == x.shape and model.forward_features(x).shape == (2, 3)
    with pytest.raises(ValueError, match=rf"expects images of shape \(B, 1, {side}, {side}\)"):
        model(torch.rand(2, 1, side + 1, side))


def test_preset_textbook_size_28_is_exact():
    for name in ("conv_autoencoder_mnist", "conv_vae_mnist"):
        model = zoo.create_model(name).eval()
        assert model(torch.rand(3, 1, 28, 28)).shape == (3, 1, 28, 28)


def test_a_tiny_autoencoder_overfits_a_batch_far_below_the_mean_image():
    torch.manual_seed(0)
    model = zoo.ConvAutoencoder(widths=(8, 16), latent_channels=4, loss="mse")
    pixels = _pixels(4, side=12)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        loss = model.batch_loss(pixels)
        loss.backward()
        optimizer.step()
    mean_image_mse = F.mse_loss(pixels.mean(0, keepdim=True).expand_as(pixels), pixels).item()
    with torch.no_grad():
        assert F.mse_loss(model.eval()(pixels), pixels).item() < 0.1 * mean_image_mse


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_logged_loss_mse_and_psnr_equal_an_independent_computation(loss):
    """val/loss, val/mse and val/psnr from the Trainer, recomputed from the model's outputs on the val loader."""
    torch.manual_seed(0)
    model = zoo.ConvAutoencoder(loss=loss, img_size=16, **TINY_AE).eval()
    pixels = _pixels(12)
    metrics = quiet_trainer().validate(model, _loader(pixels), verbose=False)[0]
    with torch.no_grad():
        recon = model(pixels)  # the loader's normalization undone: the same [0, 1] images
    if loss == "bce":
        expected_loss = -(pixels * recon.log() + (1 - pixels) * (1 - recon).log()).mean().item()
    else:
        expected_loss = ((recon - pixels) ** 2).mean().item()
    mse = ((recon - pixels) ** 2).mean().item()
    assert metrics["val/loss"] == pytest.approx(expected_loss, rel=1e-4)
    assert metrics["val/mse"] == pytest.approx(mse, rel=1e-4)
    assert metrics["val/psnr"] == pytest.approx(10 * math.log10(1 / mse), abs=1e-3)


def test_gaussian_kl_is_the_closed_form_of_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 7, generator=generator), torch.randn(5, 7, generator=generator)
    posterior = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    expected = torch.distributions.kl_divergence(posterior, torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)
    assert torch.equal(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))


@pytest.mark.parametrize(("loss", "kl_weight"), [("bce", 1.0), ("mse", 1.0), ("bce", 0.25)])
def test_logged_elbo_terms_equal_an_independent_computation(loss, kl_weight):
    """recon, kl and elbo per image, recomputed with the seeded validation draws; elbo = -(recon + kl) and
    loss = recon + kl_weight * kl."""
    torch.manual_seed(0)
    model = zoo.ConvVAE(img_size=16, loss=loss, kl_weight=kl_weight, sample_seed=2, **TINY_VAE).eval()
    pixels = _pixels(12)
    metrics = quiet_trainer().validate(model, _loader(pixels, batch_size=5), verbose=False)[0]
    recon, kl = [], []
    with torch.no_grad():
        for batch_idx, start in enumerate(range(0, 12, 5)):
            x = pixels[start : start + 5]
            h = model.encoder(x).flatten(1)
            mu, logvar = model.to_stats(h).chunk(2, dim=1)
            eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(2 * 1_000_003 + batch_idx))
            probs = torch.sigmoid(model.decode(mu + (0.5 * logvar).exp() * eps))
            bernoulli = -(x * probs.log() + (1 - x) * (1 - probs).log())
            nll = bernoulli if loss == "bce" else (probs - x) ** 2
            recon.append(nll.flatten(1).sum(1))
            kl.append(0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1))
    recon, kl = torch.cat(recon).mean().item(), torch.cat(kl).mean().item()
    assert metrics["val/recon"] == pytest.approx(recon, rel=1e-4)
    assert metrics["val/kl"] == pytest.approx(kl, rel=1e-4)
    assert metrics["val/elbo"] == pytest.approx(-(recon + kl), rel=1e-4)
    assert metrics["val/loss"] == pytest.approx(recon + kl_weight * kl, rel=1e-4)
    assert kl > 0 and recon > 0


def test_kl_weight_warms_up_linearly_over_training_batches():
    model = zoo.ConvVAE(img_size=16, kl_weight=0.5, kl_warmup_epochs=2, **TINY_VAE)
    assert model.kl_weight_at(0, "train") == 0.5  # no trainer: the full weight
    model._trainer = SimpleNamespace(num_training_batches=4, current_epoch=0)
    assert [model.kl_weight_at(i, "train") for i in range(4)] == [0.0, 0.0625, 0.125, 0.1875]
    model._trainer.current_epoch = 1
    assert model.kl_weight_at(2, "train") == pytest.approx(0.5 * 1.5 / 2)
    assert model.kl_weight_at(2, "val") == 0.5  # evaluation always uses kl_weight
    model._trainer.current_epoch = 3
    assert model.kl_weight_at(0, "train") == 0.5
    with pytest.raises(ValueError, match="kl_weight >= 0"):
        zoo.ConvVAE(kl_weight=-1.0)


def test_samples_from_the_prior_are_images_in_0_1_and_reproducible():
    model = zoo.ConvVAE(img_size=20, **TINY_VAE).eval()
    samples = model.sample(6, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (6, 1, 20, 20) and samples.min() >= 0 and samples.max() <= 1
    torch.testing.assert_close(model.sample(6, generator=torch.Generator().manual_seed(0)), samples)
    assert not torch.equal(model.sample(6, generator=torch.Generator().manual_seed(1)), samples)
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(model.decode(z)), samples)  # decoded latents drawn from N(0, I)


def _events(log_dir: str) -> EventAccumulator:
    events = EventAccumulator(log_dir, size_guidance={"images": 0})
    events.Reload()
    return events


def _tile(grid: torch.Tensor, index: int, per_row: int = 4, side: int = 16) -> torch.Tensor:
    """Image ``index`` of a grid of ``per_row`` columns with 2-pixel padding (first channel)."""
    row, col = divmod(index, per_row)
    top, left = 2 + row * (side + 2), 2 + col * (side + 2)
    return grid[0, top : top + side, left : left + side]


def _fit_with_grid(tmp_path: Path, model: zoo.Reconstruction, logger) -> ReconstructionGridLogger:
    grid = ReconstructionGridLogger(num_samples=4, every_n_epochs=1, seed=5)
    trainer = quiet_trainer(max_epochs=2, logger=logger, callbacks=[grid], num_sanity_val_steps=0)
    trainer.fit(model, _loader(_pixels(10, seed=1), batch_size=5), _loader(_pixels(10, seed=2), batch_size=5))
    return grid


def test_grid_callback_writes_inputs_over_reconstructions_and_samples(tmp_path):
    torch.manual_seed(0)
    model = zoo.ConvVAE(img_size=16, **TINY_VAE)
    logger = TensorBoardLogger(tmp_path)
    grid = _fit_with_grid(tmp_path, model, logger)
    events = _events(logger.log_dir)
    assert [e.step for e in events.Images("val/reconstructions")] == [2, 4]  # after each epoch's two steps
    assert [e.step for e in events.Images("val/samples")] == [2, 4]

    model.eval()
    inputs = _pixels(10, seed=2)[:4]
    with torch.no_grad():
        expected = torch.cat([inputs, model(inputs)])  # top row the inputs in pixels, bottom their reconstructions
        samples = model.sample(4, generator=torch.Generator().manual_seed(5))
    assert grid.last_reconstructions.shape == (3, 2 * 18 + 2, 4 * 18 + 2) and grid.last_samples.shape == (3, 20, 74)
    for index, image in enumerate(expected):
        torch.testing.assert_close(_tile(grid.last_reconstructions, index), image[0], atol=1e-5, rtol=0)
    for index, image in enumerate(samples):
        torch.testing.assert_close(_tile(grid.last_samples, index), image[0], atol=1e-5, rtol=0)
    png = events.Images("val/reconstructions")[-1].encoded_image_string
    decoded = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    np.testing.assert_array_equal(decoded, to_image_array(grid.last_reconstructions))


def test_grid_callback_without_sample_or_logger(tmp_path):
    """A plain autoencoder has no samples; with no logger the callback still runs and keeps its grid."""
    torch.manual_seed(0)
    logger = TensorBoardLogger(tmp_path)
    grid = _fit_with_grid(tmp_path, zoo.ConvAutoencoder(img_size=16, **TINY_AE), logger)
    assert set(_events(logger.log_dir).Tags()["images"]) == {"val/reconstructions"} and grid.last_samples is None
    quiet = _fit_with_grid(tmp_path, zoo.ConvVAE(img_size=16, **TINY_VAE), logger=False)
    assert quiet.last_reconstructions.shape == (3, 2 * 18 + 2, 4 * 18 + 2) and quiet.last_samples is not None
    with pytest.raises(ValueError, match="num_samples"):
        ReconstructionGridLogger(num_samples=0)


@pytest.mark.parametrize("cls", [zoo.ConvAutoencoder, zoo.ConvVAE])
def test_the_tools_answer_with_the_reconstructed_image(cls):
    """uint8 images in, the reconstruction as uint8 (H, W, C) out: predict_step's [0, 1] image, rounded."""
    kwargs = TINY_AE if cls is zoo.ConvAutoencoder else TINY_VAE
    model = cls(img_size=16, **kwargs).eval()
    images = (_pixels(3) * 255).round().to(torch.uint8)
    answers = Predictor.from_model(model).predict_tensor(images)
    with torch.no_grad():
        expected = model.predict_step((images.float() / 255 - MEAN[0]) / STD[0], 0)
    assert cls.answers_images and [set(answer) for answer in answers] == [{"input", "image"}] * 3
    got = torch.tensor([answer["image"] for answer in answers])  # (B, H, W, C) uint8 values
    assert got.shape == (3, 16, 16, 1) and expected.min() >= 0 and expected.max() <= 1
    assert (got.permute(0, 3, 1, 2) - (expected * 255).round()).abs().max() <= 1


def test_mnist_vae_recipe_links_the_data_and_logs_the_elbo(mnist_dir):
    cli = mnist_vae.main(["fit", "--trainer.fast_dev_run=2", *QUIET, f"--data.data_dir={mnist_dir}"])
    model, metrics = cli.model, cli.trainer.callback_metrics
    assert isinstance(model, zoo.ConvVAE) and model.img_size == (28, 28) and tuple(model.hparams.mean) == (0.1307,)
    assert sum(p.numel() for p in model.parameters()) == zoo.model_info("conv_vae_mnist").num_params
    assert cli.trainer.checkpoint_callback.monitor == "val/loss"
    assert any(isinstance(cb, ReconstructionGridLogger) for cb in cli.trainer.callbacks)
    assert {"test/elbo", "test/kl", "test/recon", "test/psnr", "test/mse"} <= set(metrics)
    torch.testing.assert_close(metrics["test/elbo"], -(metrics["test/recon"] + metrics["test/kl"]))
