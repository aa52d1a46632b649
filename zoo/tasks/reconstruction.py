"""Image-reconstruction task bases: autoencoders (:class:`Reconstruction`), VAEs (:class:`VariationalReconstruction`).

An architecture maps images in [0, 1] pixel units to per-pixel *logits*; the reconstruction is their sigmoid, so it
lies in [0, 1] whatever the loss. Any image datamodule works: its batches are images or ``(images, labels)`` (labels
are ignored), their normalization is undone with ``mean``/``std`` (linked from the datamodule by the CLI, as for
:class:`~zoo.tasks.Denoiser`), and inputs, targets, losses and metrics are all in [0, 1] pixel units.

The losses, per pixel ``x`` (the target, clipped to [0, 1]) and logit ``l``:

- ``"bce"``: ``-[x log sigmoid(l) + (1 - x) log(1 - sigmoid(l))]``, the Bernoulli negative log-likelihood of the
  pixel (for grey pixels, the cross-entropy with the intensity taken as a probability: the usual MNIST convention;
  its minimum is the pixel's binary entropy, 0 only for black-or-white images);
- ``"mse"``: ``(sigmoid(l) - x) ** 2``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MeanSquaredError, MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio

from zoo.tasks.base import Split, StepOutput, TaskModule
from zoo.tasks.denoising import _per_channel
from zoo.tasks.image_classification import _pair

ReconstructionLoss = Literal["bce", "mse"]


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` per sample, summed over the latent dimensions: ``(B, D) -> (B,)``.

    >>> gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3))
    tensor([0., 0.])
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


class Reconstruction(TaskModule):
    """Task base for autoencoders; a subclass builds the network and implements :meth:`reconstruct_logits`.

    Logs ``{train,val,test}/loss`` (the per-pixel mean of ``loss``) and ``{val,test}/mse`` and ``{val,test}/psnr``
    (dB, ``10 log10(1 / mse)`` over the split's pixels, not a mean of per-image values) of the reconstruction in
    [0, 1] pixel units. ``forward``, ``predict_step`` and the tools answer with reconstructions in [0, 1].

    Args:
        in_channels: channels of the images (from the data).
        img_size: input size (from the data); fully convolutional models accept other sizes.
        loss: ``"bce"`` (Bernoulli likelihood of the pixels, on the logits) or ``"mse"`` (of the sigmoid).
        mean: per-channel mean the datamodule normalized with (undone before the network; ``None``: 0).
        std: per-channel std the datamodule normalized with (``None``: 1).
        **optim_args: optimizer and schedule, see :class:`~zoo.tasks.base.TaskModule`.
    """

    monitor = ("val/loss", "min")
    data_links: ClassVar[tuple[str, ...]] = ("in_channels", "img_size", "mean", "std")
    answers_images = True

    def __init__(
        self,
        in_channels: int = 1,
        img_size: int | tuple[int, int] = 28,
        loss: ReconstructionLoss = "bce",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **optim_args: Any,
    ) -> None:
        super().__init__(**optim_args)
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        if loss not in ("bce", "mse"):
            raise ValueError(f"Unknown loss {loss!r}; choose 'bce' or 'mse'.")
        self.in_channels = in_channels
        self.img_size = _pair(img_size)
        self.example_input_array = torch.zeros(2, in_channels, *self.img_size)
        # Buffers (not saved: the hyperparameters rebuild them) so they follow the module's device.
        self.register_buffer("mean", _per_channel(mean, 0.0, in_channels, "mean"), persistent=False)
        self.register_buffer("std", _per_channel(std, 1.0, in_channels, "std"), persistent=False)
        if (self.std <= 0).any():
            raise ValueError("std must be positive")

    # --- what a model computes ---------------------------------------------------------------------------------
    def reconstruct_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network: images ``(B, C, H, W)`` in [0, 1] -> per-pixel logits of the same shape."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructions in [0, 1] of images ``(B, C, H, W)`` in [0, 1] pixel units."""
        self.check_input(x)
        return torch.sigmoid(self.reconstruct_logits(x))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the expected shape when ``x`` is not a batch of images."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or not x.is_floating_point():
            raise ValueError(
                f"{type(self).__name__} expects images of shape (B, {self.in_channels}, H, W) and a floating dtype, "
                f"got {x.dtype} {tuple(x.shape)}"
            )

    # --- units and loss ------------------------------------------------------------------------------------
    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the datamodule's normalization: ``x * std + mean``."""
        return x * self.std + self.mean

    def batch_pixels(self, batch: Any) -> torch.Tensor:
        """The images of a batch (images, or ``(images, labels, ...)``) in [0, 1] pixel units, clipped there."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        self.check_input(images)
        return self.to_pixels(images).clamp(0.0, 1.0)  # rounding can leave 1e-7 outside [0, 1]

    def pixel_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The configured loss of every pixel (no reduction), in nats for ``"bce"``."""
        if self.hparams.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return (torch.sigmoid(logits) - target).pow(2)

    # --- metrics ---------------------------------------------------------------------------------------------
    def build_metrics(self) -> MetricCollection:
        """MSE and PSNR of the reconstruction in [0, 1] pixel units."""
        metrics = {"mse": MeanSquaredError(), "psnr": PeakSignalNoiseRatio(data_range=1.0)}
        return MetricCollection(metrics, compute_groups=False)

    def update_metrics(self, metrics: MetricCollection, **values: torch.Tensor) -> None:
        if "image" in values:
            metrics["mse"].update(values["image"], values["target"])
            metrics["psnr"].update(values["image"], values["target"])

    # --- the loop's parts ----------------------------------------------------------------------------------------
    def step(self, batch: Any, batch_idx: int, split: Split) -> StepOutput:
        """The per-pixel mean loss; reconstructions and targets in pixel units for the metrics."""
        pixels = self.batch_pixels(batch)
        logits = self.reconstruct_logits(pixels)
        loss = self.pixel_loss(logits, pixels).mean()
        values = {} if split == "train" else {"image": torch.sigmoid(logits.detach()), "target": pixels}
        return StepOutput(loss, pixels.shape[0], values)

    def predict_tensors(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstructions in [0, 1] (``image``); ``x`` is normalized like the data."""
        return {"image": self(self.to_pixels(x).clamp(0.0, 1.0))}

    def preprocessing(self) -> dict[str, Any]:
        return {
            "input": "image",
            "in_channels": self.in_channels,
            "img_size": list(self.img_size),
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
        }

    @classmethod
    def answers(
        cls, outputs: Mapping[str, torch.Tensor], preprocessing: Mapping[str, Any], top_k: int = 5
    ) -> list[dict[str, Any]]:
        """Each reconstruction as uint8 ``(H, W, C)`` nested lists (``image``)."""
        images = (outputs["image"].float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        return [{"image": image.tolist()} for image in images]

    # --- what the shared tests use ---------------------------------------------------------------------------------
    def example_batch(self, batch_size: int = 8, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """``(images, labels)``: black-and-white blobs (bilinear 4x4 noise over 0.5), normalized like the data."""
        coarse = torch.rand(batch_size, self.in_channels, 4, 4, generator=generator)
        pixels = (F.interpolate(coarse, size=self.img_size, mode="bilinear", align_corners=False) > 0.5).float()
        return (pixels - self.mean) / self.std, torch.zeros(batch_size, dtype=torch.long)

    def overfit_bound(self, batch: Any) -> float:
        """The loss's floor plus a third of the way from it to the best constant image's loss (the batch mean)."""
        pixels = self.batch_pixels(batch)
        mean_logits = torch.logit(pixels.mean(0, keepdim=True).expand_as(pixels), eps=1e-6)
        return self._bound(self.pixel_loss(mean_logits, pixels), self._floor(pixels), pixels.shape[0])

    def _floor(self, pixels: torch.Tensor) -> torch.Tensor:
        """The least loss of every pixel: its binary entropy for ``"bce"``, 0 for ``"mse"``."""
        if self.hparams.loss == "mse":
            return torch.zeros_like(pixels)
        return F.binary_cross_entropy(pixels, pixels, reduction="none")

    def _bound(self, constant: torch.Tensor, floor: torch.Tensor, batch_size: int) -> float:
        return (floor.mean() + (constant.mean() - floor.mean()) / 3).item()


class VariationalReconstruction(Reconstruction):
    """Task base for variational autoencoders; a subclass implements :meth:`encode` and :meth:`decode`.

    Training maximizes the evidence lower bound with the reparameterization trick (``z = mu + sigma * eps``):
    ``loss = recon + kl_weight * kl`` per image, where ``recon`` is ``loss`` (see the module) summed over the image's
    pixels and ``kl = KL(q(z|x) || N(0, I))`` in closed form. Per split it logs ``loss``, ``recon``, ``kl`` and
    ``elbo = -(recon + kl)``, in nats per image; ``{val,test}/mse`` and ``/psnr`` of the reconstruction from ``mu``.

    ``elbo`` is the evidence lower bound on ``log p(x)`` of the decoder's likelihood: with ``"bce"`` the Bernoulli
    log-likelihood summed over pixels (exact for black-and-white images; for grey ones the cross-entropy convention);
    with ``"mse"`` a Gaussian of variance 1/2 per pixel, whose log-likelihood is ``-(squared error) - log(pi) / 2``
    per pixel: ``elbo`` leaves out that constant (``-(C H W / 2) log pi`` per image).

    Validation and test draw ``eps`` from a generator seeded by ``sample_seed`` and the batch index, so epochs and
    runs compare on the same draws. ``forward`` is deterministic: it decodes ``mu``.

    Args:
        latent_dim: dimensions of the latent ``z``.
        kl_weight: weight of the KL term in the loss (1: the ELBO; a beta-VAE's beta otherwise).
        kl_warmup_epochs: training epochs (fractions allowed) over which the KL weight grows linearly from 0 to
            ``kl_weight``, stepped per batch; validation and test use ``kl_weight``.
        sample_seed: seed of the validation and test draws.
        **task_args: data sizes, loss, optimizer and schedule, see :class:`Reconstruction`.
    """

    metric_splits = ("train", "val", "test")
    #: Per-image values (nats) logged on every split, beside the loss.
    elbo_terms: ClassVar[tuple[str, ...]] = ("recon", "kl", "elbo")

    def __init__(
        self,
        latent_dim: int = 16,
        kl_weight: float = 1.0,
        kl_warmup_epochs: float = 0.0,
        sample_seed: int = 0,
        **task_args: Any,
    ) -> None:
        super().__init__(**task_args)
        if latent_dim < 1 or not kl_weight >= 0 or not kl_warmup_epochs >= 0:
            raise ValueError(
                f"need latent_dim >= 1, kl_weight >= 0 and kl_warmup_epochs >= 0, got {latent_dim}, {kl_weight}, "
                f"{kl_warmup_epochs}"
            )
        self.latent_dim = latent_dim

    # --- what a model computes ---------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, C, H, W)`` in [0, 1] -> the posterior's ``mu`` and ``logvar``, each ``(B, latent_dim)``."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, latent_dim)`` -> per-pixel logits ``(B, C, *img_size)``."""
        raise NotImplementedError

    def reconstruct_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])  # the posterior's mean: deterministic

    def reparameterize(
        self, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` (from a CPU ``generator`` when given)."""
        if generator is None:
            eps = torch.randn_like(mu)
        else:
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
        return mu + torch.exp(0.5 * logvar) * eps

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images ``(n, C, *img_size)`` in [0, 1] decoded from the prior ``N(0, I)`` (a CPU ``generator``
        makes them reproducible)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=self.dtype).to(self.device)
        return torch.sigmoid(self.decode(z))

    def kl_weight_at(self, batch_idx: int, split: Split) -> float:
        """The KL term's weight for a batch: ``kl_weight``, grown linearly over ``kl_warmup_epochs`` in training."""
        weight, warmup = self.hparams.kl_weight, self.hparams.kl_warmup_epochs
        if split != "train" or not warmup or self._trainer is None:
            return weight
        batches = self.trainer.num_training_batches
        fraction = batch_idx / batches if math.isfinite(batches) and batches > 0 else 0.0
        return weight * min(1.0, (self.current_epoch + fraction) / warmup)

    # --- metrics ---------------------------------------------------------------------------------------------
    def build_metrics(self) -> MetricCollection:
        """MSE and PSNR of the reconstruction from ``mu``; the per-image means of ``recon``, ``kl`` and ``elbo``."""
        metrics = super().build_metrics()
        metrics.add_metrics({name: MeanMetric() for name in self.elbo_terms})
        return metrics

    def update_metrics(self, metrics: MetricCollection, **values: torch.Tensor) -> None:
        super().update_metrics(metrics, **values)
        for name in self.elbo_terms:
            metrics[name].update(values[name])

    def epoch_values(self, split: Split, loss: MeanMetric, metrics: MetricCollection | None) -> dict[str, Any]:
        values = super().epoch_values(split, loss, metrics)
        if split == "train":  # training keeps no reconstructions (they would cost a decode of mu per batch)
            values = {key: value for key, value in values.items() if key not in ("train/mse", "train/psnr")}
        return values

    # --- the loop's parts ----------------------------------------------------------------------------------------
    def step(self, batch: Any, batch_idx: int, split: Split) -> StepOutput:
        """The negative ELBO per image (KL weighted); its terms, and in evaluation the reconstruction from ``mu``."""
        pixels = self.batch_pixels(batch)
        mu, logvar = self.encode(pixels)
        generator = (
            None
            if split == "train"
            else torch.Generator().manual_seed(self.hparams.sample_seed * 1_000_003 + batch_idx)
        )
        logits = self.decode(self.reparameterize(mu, logvar, generator))
        recon = self.pixel_loss(logits, pixels).flatten(1).sum(1)  # (B,) nats per image
        kl = gaussian_kl(mu, logvar)  # (B,)
        loss = (recon + self.kl_weight_at(batch_idx, split) * kl).mean()
        values = {"recon": recon.detach(), "kl": kl.detach(), "elbo": -(recon + kl).detach()}
        if split != "train":
            values.update(image=torch.sigmoid(self.decode(mu.detach())), target=pixels)
        return StepOutput(loss, pixels.shape[0], values)

    def _bound(self, constant: torch.Tensor, floor: torch.Tensor, batch_size: int) -> float:
        """Per image: a KL of ``log(batch_size)`` nats (enough latent to tell the images apart) on top of the
        reconstruction bound."""
        pixels_per_image = constant[0].numel()
        return pixels_per_image * super()._bound(constant, floor, batch_size) + math.log(batch_size)
