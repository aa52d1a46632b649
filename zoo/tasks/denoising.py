"""Image-denoising task base: the noise model, loss, PSNR and predictions of any image-to-image network.

An architecture subclasses :class:`Denoiser` and implements ``forward(noisy) -> clean estimate`` on images in [0, 1]
pixel units; how it trains is defined here once. Any image datamodule works: its ``(image, label)`` batches are taken
as clean images, their normalization is undone (``mean``/``std``, linked from the datamodule by the CLI), and the
task adds noise from one of three models, each a function of its own: :func:`gaussian_noise` (read noise),
:func:`poisson_noise` (photon counts at a given peak) and :func:`salt_and_pepper_noise` (dead and hot pixels).
Datasets of real noise may yield ``(noisy, clean)`` pairs instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from zoo.tasks.base import Split, StepOutput, TaskModule
from zoo.tasks.image_classification import _pair

DenoiseLoss = Literal["mse", "l1"]
NoiseName = Literal["gaussian", "poisson", "salt_pepper"]
NOISES: tuple[str, ...] = ("gaussian", "poisson", "salt_pepper")


def gaussian_noise(
    clean: torch.Tensor, std: float | torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``clean`` plus zero-mean Gaussian noise of standard deviation ``std`` (a float, or one per image
    ``(B, 1, 1, 1)``); drawn on ``generator``'s device when one is given (the CPU for a CPU generator).

    >>> noisy = gaussian_noise(torch.zeros(1, 1, 64, 64), 0.1, torch.Generator().manual_seed(0))
    >>> round(noisy.std().item(), 2)
    0.1
    """
    device = clean.device if generator is None else generator.device
    noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype, device=device)
    return clean + (noise * torch.as_tensor(std, dtype=clean.dtype, device=device)).to(clean.device)


def poisson_noise(
    clean: torch.Tensor, peak: float | torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Shot noise: each pixel becomes a photon count drawn from ``Poisson(clean * peak)``, divided by ``peak`` (a float
    or one per image ``(B, 1, 1, 1)``). White collects ``peak`` photons on average; the noise's variance is
    ``clean / peak``, so it grows with brightness, and fewer photons mean more noise.

    >>> clean = torch.full((1, 1, 100, 100), 0.5)
    >>> noisy = poisson_noise(clean, 20.0, torch.Generator().manual_seed(0))
    >>> round(noisy.mean().item(), 1), round(noisy.var().item() * 20 / 0.5, 1)  # mean kept, variance clean / peak
    (0.5, 1.0)
    """
    device = clean.device if generator is None else generator.device
    peak = torch.as_tensor(peak, dtype=clean.dtype, device=device)
    rates = clean.detach().to(device).clamp_min(0) * peak
    return (torch.poisson(rates, generator=generator) / peak).to(clean.device, clean.dtype)


def salt_and_pepper_noise(
    clean: torch.Tensor, amount: float | torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Impulse noise: a fraction ``amount`` of the pixels (a float or one per image ``(B, 1, 1, 1)``), chosen
    independently per pixel and channel, set to 0 or 1 with equal odds; the others kept.

    >>> noisy = salt_and_pepper_noise(torch.full((1, 1, 100, 100), 0.5), 0.2, torch.Generator().manual_seed(0))
    >>> round((noisy != 0.5).float().mean().item(), 1), round(noisy[noisy != 0.5].mean().item(), 1)
    (0.2, 0.5)
    """
    device = clean.device if generator is None else generator.device
    hit = torch.rand(clean.shape, generator=generator, device=device) < torch.as_tensor(amount, device=device)
    salt = torch.rand(clean.shape, generator=generator, device=device) < 0.5
    impulses = salt.to(clean.dtype)
    return torch.where(hit.to(clean.device), impulses.to(clean.device), clean)


def _per_channel(values: Sequence[float] | None, default: float, channels: int, name: str) -> torch.Tensor:
    values = [default] if values is None else list(values)
    if len(values) not in (1, channels):
        raise ValueError(f"{name} has {len(values)} values for {channels} channels")
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1).expand(1, channels, 1, 1).clone()


class Denoiser(TaskModule):
    """Task base for image denoising; subclasses build the network.

    Noise, loss and metrics are in pixel units ([0, 1]). Training batches get fresh noise of the chosen model:
    ``"gaussian"`` of std ``noise_std``, ``"poisson"`` counts at ``peak`` photons for white, or ``"salt_pepper"``
    impulses on a fraction ``amount`` of the pixels. ``blind=True`` draws each training image's level (std, or
    fraction) uniformly from ``[0, level]``, and for Poisson its peak log-uniformly from ``[peak, 16 * peak]`` (a
    quarter of the noise up to all of it), so one model serves every level up to the given one. Validation and test
    noise is always at the full level and fixed by ``noise_seed`` and the batch index, so epochs and runs compare on
    the same noisy images.

    Logs ``{train,val,test}/loss`` per epoch (``train/loss_step`` on logging steps) and, of the output clipped to
    [0, 1], ``{val,test}/psnr`` (dB, pooled: from the mean squared error over all pixels of the split),
    ``{val,test}/psnr_mean`` (dB, the mean over images of each image's PSNR, the textbook's definition) and
    ``{val,test}/ssim`` (the mean over images of each image's SSIM, Gaussian window 11, sigma 1.5, borders reflected;
    SSIM pooled over all windows of all images is the same number when images share a size); each with
    ``_input``: the same metric of the noisy input clipped to [0, 1], the baseline the model must beat.

    Args:
        in_channels: channels of the images.
        img_size: nominal input size (summaries and export); convolutional denoisers accept other sizes.
        noise: the noise model, ``"gaussian"``, ``"poisson"`` or ``"salt_pepper"``.
        noise_std: Gaussian noise's standard deviation in pixel units (25/255 is the classic benchmark level).
        blind: draw each training image's noise level at random, up to the given one (see above).
        loss: ``"mse"`` or ``"l1"`` between the output and the clean image.
        mean: per-channel mean the datamodule normalized with (undone before adding noise; ``None``: 0).
        std: per-channel std the datamodule normalized with (``None``: 1).
        noise_seed: seed of the validation and test noise.
        peak: Poisson noise's photon count for white (lower is noisier).
        amount: salt-and-pepper noise's fraction of pixels hit.
        **optim_args: optimizer and schedule, see :class:`~zoo.tasks.base.TaskModule`.
    """

    monitor = ("val/psnr", "max")
    data_links = ("in_channels", "img_size", "mean", "std")
    answers_images = True

    def __init__(
        self,
        in_channels: int = 1,
        img_size: int | tuple[int, int] = 28,
        noise_std: float = 0.3,
        blind: bool = False,
        loss: DenoiseLoss = "mse",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        noise_seed: int = 0,
        noise: NoiseName = "gaussian",
        peak: float = 30.0,
        amount: float = 0.1,
        **optim_args: Any,
    ) -> None:
        super().__init__(**optim_args)
        if in_channels < 1 or noise_std <= 0 or peak <= 0:
            raise ValueError(
                f"in_channels, noise_std and peak must be positive, got {in_channels}, {noise_std} and {peak}"
            )
        if not 0 < amount <= 1:
            raise ValueError(f"amount (the fraction of pixels salt and pepper hits) must be in (0, 1], got {amount}")
        if noise not in NOISES:
            raise ValueError(f"Unknown noise {noise!r}; choose one of {', '.join(map(repr, NOISES))}.")
        if loss not in ("mse", "l1"):
            raise ValueError(f"Unknown loss {loss!r}; choose 'mse' or 'l1'.")
        self.in_channels = in_channels
        self.img_size = _pair(img_size)
        self.example_input_array = torch.zeros(2, in_channels, *self.img_size)
        # Buffers (not saved: the hyperparameters rebuild them) so they follow the module's device.
        self.register_buffer("mean", _per_channel(mean, 0.0, in_channels, "mean"), persistent=False)
        self.register_buffer("std", _per_channel(std, 1.0, in_channels, "std"), persistent=False)

    def build_metrics(self) -> MetricCollection:
        """Pooled PSNR, per-image mean PSNR and SSIM of the output and of the noisy input (all clipped to [0, 1]); no
        compute groups, as a model that returns its input would fuse output and input metrics for good."""
        metrics: dict[str, Any] = {}
        for suffix in ("", "_input"):
            metrics[f"psnr{suffix}"] = PeakSignalNoiseRatio(data_range=(0.0, 1.0))
            metrics[f"psnr_mean{suffix}"] = PeakSignalNoiseRatio(
                data_range=(0.0, 1.0), reduction="elementwise_mean", dim=(1, 2, 3)
            )
            metrics[f"ssim{suffix}"] = StructuralSimilarityIndexMeasure(data_range=1.0)
        return MetricCollection(metrics, compute_groups=False)

    def update_metrics(
        self, metrics: MetricCollection, output: torch.Tensor, noisy: torch.Tensor, clean: torch.Tensor
    ) -> None:
        # PeakSignalNoiseRatio clips to data_range itself; SSIM does not
        for suffix, estimate in (("", output.clamp(0, 1)), ("_input", noisy.clamp(0, 1))):
            for name in ("psnr", "psnr_mean", "ssim"):
                metrics[f"{name}{suffix}"].update(estimate, clean)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the expected shape when ``x`` is not a batch of images."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )

    # --- noise and loss ------------------------------------------------------------------------------------
    def add_noise(
        self, clean: torch.Tensor, generator: torch.Generator | None = None, blind: bool | None = None
    ) -> torch.Tensor:
        """``clean`` corrupted by the configured noise model, at a per-image random level when ``blind`` (default:
        the ``blind`` hyperparameter); a CPU ``generator`` makes it reproducible."""
        # Training noise is drawn where the batch is; only the seeded evaluation noise comes from the CPU generator,
        # so it is the same on every device.
        device = clean.device if generator is None else generator.device
        noise, hparams = self.hparams.noise, self.hparams
        level = {"gaussian": hparams.noise_std, "poisson": hparams.peak, "salt_pepper": hparams.amount}[noise]
        level = torch.full((clean.shape[0], 1, 1, 1), float(level), device=device)
        if hparams.blind if blind is None else blind:
            draw = torch.rand(level.shape, generator=generator, device=device)
            level = level * 16**draw if noise == "poisson" else level * draw
        corrupt = {"gaussian": gaussian_noise, "poisson": poisson_noise, "salt_pepper": salt_and_pepper_noise}[noise]
        return corrupt(clean, level, generator)

    def compute_loss(self, output: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """The configured pixel loss between the output and the clean image."""
        return F.l1_loss(output, clean) if self.hparams.loss == "l1" else F.mse_loss(output, clean)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the datamodule's normalization: ``x * std + mean``."""
        return x * self.std + self.mean

    def noisy_clean_pair(
        self, batch: Any, generator: torch.Generator | None = None, blind: bool | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Pixel-unit ``(noisy, clean)`` from a batch of clean images, ``(image, label)`` or ``(noisy, clean)``; see
        :meth:`add_noise` for ``generator`` and ``blind``."""
        if isinstance(batch, (tuple, list)):
            first, second = batch[0], batch[1]
            if second.shape == first.shape and second.is_floating_point():
                return self.to_pixels(first), self.to_pixels(second)
            batch = first
        clean = self.to_pixels(batch)
        return self.add_noise(clean, generator, blind), clean

    def _eval_generator(self, batch_idx: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.hparams.noise_seed * 1_000_003 + batch_idx)

    # --- the task contract -----------------------------------------------------------------------------------
    def example_batch(self, batch_size: int = 8, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """``(noisy, clean)`` smooth random images (structure under the noise), normalized like the data."""
        coarse = torch.rand(batch_size, self.in_channels, 4, 4, generator=generator)
        clean = F.interpolate(coarse, size=self.img_size, mode="bilinear", align_corners=False)
        noisy = self.add_noise(clean, generator)
        return (noisy - self.mean) / self.std, (clean - self.mean) / self.std

    def overfit_bound(self, batch: Any) -> float:
        """5% of the noise's own MSE: far better than returning the input."""
        noisy, clean = self.noisy_clean_pair(batch)
        return 0.05 * F.mse_loss(noisy, clean).item()

    # --- the loop's parts ----------------------------------------------------------------------------------------
    def step(self, batch: Any, batch_idx: int, split: Split) -> StepOutput:
        """The loss on freshly noised images (training) or on noise fixed by ``noise_seed`` and ``batch_idx``."""
        generator = None if split == "train" else self._eval_generator(batch_idx)
        noisy, clean = self.noisy_clean_pair(batch, generator, blind=None if split == "train" else False)
        output = self(noisy)
        loss = self.compute_loss(output, clean)
        values = {} if split == "train" else {"output": output, "noisy": noisy, "clean": clean}
        return StepOutput(loss, clean.shape[0], values)

    def predict_tensors(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Denoised images in [0, 1] (``image``); ``x`` is the noisy input, normalized like the data."""
        return {"image": self(self.to_pixels(x)).clamp(0, 1)}

    def preprocessing(self) -> dict[str, Any]:
        mean, std = self.mean.flatten().tolist(), self.std.flatten().tolist()
        return {
            "input": "image",
            "in_channels": self.in_channels,
            "img_size": list(self.img_size),
            "mean": mean,
            "std": std,
        }

    @classmethod
    def answers(
        cls, outputs: Mapping[str, torch.Tensor], preprocessing: Mapping[str, Any], top_k: int = 5
    ) -> list[dict[str, Any]]:
        """Each denoised image as uint8 ``(H, W, C)`` nested lists (``image``)."""
        images = (outputs["image"].float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        return [{"image": image.tolist()} for image in images]
