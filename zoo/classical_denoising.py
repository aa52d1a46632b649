"""Classical denoisers, the baselines a learned one must beat: filters with no learned weights, on the task base.

:class:`ClassicalDenoiser` runs a Gaussian filter, a median filter (the textbook answer to salt and pepper),
total-variation denoising (Chambolle, 2004) or non-local means (Buades et al., 2005) from scikit-image and SciPy,
image by image on the CPU. It is a :class:`~zoo.tasks.Denoiser`, so ``Trainer.validate``/``test`` score it with the
same noise, PSNR and SSIM as a trained model (it has nothing to train). Its one knob, ``strength``, is best chosen
on validation images (``benchmarks/denoising_study.py`` does so).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from zoo.tasks import Denoiser

ClassicalMethod = Literal["gaussian", "median", "tv", "nl_means"]
METHODS: tuple[str, ...] = ("gaussian", "median", "tv", "nl_means")


class ClassicalDenoiser(Denoiser):
    """A classical filter as a denoiser: no parameters, scored like any other :class:`~zoo.tasks.Denoiser`.

    Args:
        method: ``"gaussian"`` (filter of std ``strength`` pixels), ``"median"`` (window of side
            ``2 * round(strength) + 1``), ``"tv"`` (Chambolle's total variation with weight ``strength``) or
            ``"nl_means"`` (non-local means, 5x5 patches within 13x13, with filtering parameter ``h = strength``
            in pixel units).
        strength: the method's one knob (see ``method``).
        **task_args: image size, noise model and seed, see :class:`~zoo.tasks.Denoiser`.

    >>> denoiser = ClassicalDenoiser("median", strength=1.0)
    >>> image = torch.full((1, 1, 8, 8), 0.5)
    >>> image[0, 0, 3, 3] = 1.0  # one hot pixel
    >>> denoiser(image).unique().tolist()
    [0.5]
    """

    def __init__(self, method: ClassicalMethod = "gaussian", strength: float = 1.0, **task_args: Any) -> None:
        super().__init__(**task_args)
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(map(repr, METHODS))}.")
        if not strength > 0:
            raise ValueError(f"strength must be positive, got {strength}")
        if method in ("tv", "nl_means", "gaussian"):
            try:
                import skimage.restoration  # noqa: F401
            except ImportError as error:
                raise ModuleNotFoundError(
                    f"ClassicalDenoiser({method!r}) uses scikit-image: `pip install scikit-image`"
                ) from error
        self.method, self.strength = method, strength

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        images = x.detach().float().cpu().numpy()  # (B, C, H, W)
        out = np.stack([self._filter(image) for image in images])
        return torch.from_numpy(out.astype(np.float32)).to(x.device, x.dtype)

    def _filter(self, image: np.ndarray) -> np.ndarray:
        """One ``(C, H, W)`` image, filtered per channel or jointly as the method allows."""
        if self.method == "median":
            from scipy.ndimage import median_filter

            side = 2 * round(self.strength) + 1
            return median_filter(image, size=(1, side, side), mode="reflect")
        from skimage import filters, restoration

        # scikit-image's own layout: (H, W) grey or (H, W, C) colour
        grey = image.shape[0] == 1
        pixels, axis = (image[0], None) if grey else (np.moveaxis(image, 0, -1), -1)
        if self.method == "gaussian":
            out = filters.gaussian(pixels, sigma=self.strength, channel_axis=axis, preserve_range=True)
        elif self.method == "tv":
            out = restoration.denoise_tv_chambolle(pixels, weight=self.strength, channel_axis=axis)
        else:
            out = restoration.denoise_nl_means(
                pixels, h=self.strength, patch_size=5, patch_distance=6, fast_mode=True, channel_axis=axis
            )
        return out[None] if grey else np.moveaxis(out, -1, 0)

    def configure_optimizers(self) -> Any:
        raise RuntimeError(
            "ClassicalDenoiser has no weights to train: score it with Trainer.validate or Trainer.test instead"
        )
