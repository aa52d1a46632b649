"""Image-denoising task base: the noise model, loss, PSNR and predictions of any image-to-image network.

An architecture subclasses :class:`Denoiser` and implements ``forward(noisy) -> clean estimate`` on images in [0, 1]
pixel units; how it trains is defined here once. Any image datamodule works: its ``(image, label)`` batches are taken
as clean images, their normalization is undone (``mean``/``std``, linked from the datamodule by the CLI), and the
task adds Gaussian noise. Datasets of real noise may yield ``(noisy, clean)`` pairs instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio

from zoo.tasks.base import Split, StepOutput, TaskModule
from zoo.tasks.image_classification import _pair

DenoiseLoss = Literal["mse", "l1"]


def _per_channel(values: Sequence[float] | None, default: float, channels: int, name: str) -> torch.Tensor:
    values = [default] if values is None else list(values)
    if len(values) not in (1, channels):
        raise ValueError(f"{name} has {len(values)} values for {channels} channels")
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1).expand(1, channels, 1, 1).clone()


class Denoiser(TaskModule):
    """Task base for image denoising; subclasses build the network.

    Noise, loss and PSNR are in pixel units ([0, 1]). Training batches get Gaussian noise of std ``noise_std``
    (``blind=True``: a std drawn per image from ``[0, noise_std]``, so one model serves every level up to it).
    Validation and test noise is fixed by ``noise_seed`` and the batch index, so epochs and runs compare on the same
    noisy images. Logs ``{train,val,test}/loss`` per epoch (``train/loss_step`` on logging steps),
    ``{val,test}/psnr`` (dB, of the output clipped to [0, 1]) and ``{val,test}/psnr_input`` (dB, of the noisy input:
    the baseline the model must beat).

    Args:
        in_channels: channels of the images.
        img_size: nominal input size (summaries and export); convolutional denoisers accept other sizes.
        noise_std: standard deviation of the added noise in pixel units (25/255 is the classic benchmark level).
        blind: draw each training image's std uniformly from ``[0, noise_std]``.
        loss: ``"mse"`` or ``"l1"`` between the output and the clean image.
        mean: per-channel mean the datamodule normalized with (undone before adding noise; ``None``: 0).
        std: per-channel std the datamodule normalized with (``None``: 1).
        noise_seed: seed of the validation and test noise.
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
        **optim_args: Any,
    ) -> None:
        super().__init__(**optim_args)
        if in_channels < 1 or noise_std <= 0:
            raise ValueError(f"in_channels and noise_std must be positive, got {in_channels} and {noise_std}")
        if loss not in ("mse", "l1"):
            raise ValueError(f"Unknown loss {loss!r}; choose 'mse' or 'l1'.")
        self.in_channels = in_channels
        self.img_size = _pair(img_size)
        self.example_input_array = torch.zeros(2, in_channels, *self.img_size)
        # Buffers (not saved: the hyperparameters rebuild them) so they follow the module's device.
        self.register_buffer("mean", _per_channel(mean, 0.0, in_channels, "mean"), persistent=False)
        self.register_buffer("std", _per_channel(std, 1.0, in_channels, "std"), persistent=False)

    def build_metrics(self) -> MetricCollection:
        """PSNR of the output and of the noisy input (both clipped to [0, 1]); no compute groups, as a model that
        returns its input would fuse the two for good."""
        psnr = {name: PeakSignalNoiseRatio(data_range=(0.0, 1.0)) for name in ("psnr", "psnr_input")}
        return MetricCollection(psnr, compute_groups=False)

    def update_metrics(
        self, metrics: MetricCollection, output: torch.Tensor, noisy: torch.Tensor, clean: torch.Tensor
    ) -> None:
        metrics["psnr"].update(output, clean)
        metrics["psnr_input"].update(noisy, clean)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the expected shape when ``x`` is not a batch of images."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )

    # --- noise and loss ------------------------------------------------------------------------------------
    def add_noise(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``clean`` plus Gaussian noise (per-image std with ``blind``); a CPU ``generator`` makes it reproducible."""
        # Training noise is drawn where the batch is; only the seeded evaluation noise comes from the CPU generator,
        # so it is the same on every device.
        device = clean.device if generator is None else torch.device("cpu")
        noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype, device=device)
        std = torch.full((clean.shape[0], 1, 1, 1), self.hparams.noise_std, dtype=clean.dtype, device=device)
        if self.hparams.blind:
            std = std * torch.rand(std.shape, generator=generator, dtype=clean.dtype, device=device)
        return clean + (noise * std).to(clean.device)

    def compute_loss(self, output: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """The configured pixel loss between the output and the clean image."""
        return F.l1_loss(output, clean) if self.hparams.loss == "l1" else F.mse_loss(output, clean)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the datamodule's normalization: ``x * std + mean``."""
        return x * self.std + self.mean

    def noisy_clean_pair(self, batch: Any, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Pixel-unit ``(noisy, clean)`` from a batch of clean images, ``(image, label)`` or ``(noisy, clean)``."""
        if isinstance(batch, (tuple, list)):
            first, second = batch[0], batch[1]
            if second.shape == first.shape and second.is_floating_point():
                return self.to_pixels(first), self.to_pixels(second)
            batch = first
        clean = self.to_pixels(batch)
        return self.add_noise(clean, generator), clean

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
        noisy, clean = self.noisy_clean_pair(batch, generator)
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
