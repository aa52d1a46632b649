"""Image-classification task base: the image contract (input checks, sizes) on top of the classification task.

An architecture subclasses :class:`ImageClassifier` and implements ``forward_features``, ``forward_head`` and
``reset_classifier``; how it trains is defined once in :class:`~zoo.tasks.classification.ClassificationTask`.

Every image classifier also takes two batch-level regularizers and a test-time augmentation:

- mixup (Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization") and CutMix (Yun et al. 2019, "CutMix:
  Regularization Strategy to Train Strong Classifiers with Localizable Features"), torchvision's ``v2.MixUp`` and
  ``v2.CutMix`` applied to whole training batches (each image is mixed with its neighbour in the batch, which the
  shuffled training loader makes a random partner);
- test-time augmentation (``tta``): the class probabilities averaged over horizontal flips (``"flip"``) and, for
  ``"flip_shift"`` and ``"flip_crop"``, over translations as well, at test and predict time.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import torch
from torchmetrics import MeanMetric, MetricCollection
from torchvision import tv_tensors
from torchvision.transforms import v2

from zoo.tasks.base import Split, StepOutput
from zoo.tasks.classification import ClassificationTask, LossName

#: The test-time augmentations: none, horizontal flips, flips and one-pixel diagonal shifts, flips and translations.
TTA_MODES = ("none", "flip", "flip_shift", "flip_crop")
#: The translation of ``"flip_crop"`` in pixels (up, down, left and right).
TTA_SHIFT = 2


def check_tta(tta: str) -> str:
    """``tta`` when it names a test-time augmentation of :data:`TTA_MODES`.

    Raises:
        ValueError: naming the close matches of an unknown name.

    >>> check_tta("flip")
    'flip'
    """
    if tta not in TTA_MODES:
        close = difflib.get_close_matches(str(tta), TTA_MODES, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(name) for name in close)}?" if close else ""
        raise ValueError(f"Unknown tta {tta!r}.{hint} Choose from {', '.join(TTA_MODES)}.")
    return tta


def shift_images(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` (``(..., H, W)``) moved by ``dy`` rows and ``dx`` columns at the same size, the edge pixels repeated
    into the gap: a crop of ``x`` padded by its edges (``F.pad(mode="replicate")``), for any number of leading
    dimensions (volumes too).

    >>> shift_images(torch.arange(4.0).view(1, 4), 0, 1)
    tensor([[1., 2., 3., 3.]])
    """
    height, width = x.shape[-2:]
    rows = (torch.arange(height, device=x.device) + dy).clamp(0, height - 1)  # (H,) source row of each row
    cols = (torch.arange(width, device=x.device) + dx).clamp(0, width - 1)  # (W,)
    return x.index_select(-2, rows).index_select(-1, cols)


def tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The views of an image batch that ``tta`` averages over: ``x`` alone (``"none"``); ``x`` and its mirror image
    (``"flip"``); each of those and its shifts by one pixel up-left and down-right (``"flip_shift"``, six views, the
    CIFAR-10 speedruns' TTA); each of those and its four translations by :data:`TTA_SHIFT` pixels (``"flip_crop"``,
    ten views, as the ten crops of Krizhevsky et al. 2012)."""
    views = [x] if check_tta(tta) == "none" else [x, x.flip(-1)]
    if tta == "flip_shift":
        views = [shift_images(v, dy, dx) for v in views for dy, dx in ((0, 0), (-1, -1), (1, 1))]
    if tta == "flip_crop":
        s = TTA_SHIFT
        views = [shift_images(v, dy, dx) for v in views for dy, dx in ((0, 0), (-s, 0), (s, 0), (0, -s), (0, s))]
    return views


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class ImageClassifier(ClassificationTask):
    """Task base for image classification; subclasses build the network.

    Logs what :class:`~zoo.tasks.classification.ClassificationTask` logs (``{train,val,test}/acc``, ``/f1``, ...).
    Batches are ``(images (B, C, H, W), targets)``; targets may be class indices ``(B,)`` or class probabilities
    ``(B, C)``.

    **Mixup and CutMix** (``mixup_alpha``, ``cutmix_alpha``; both set: one of the two, chosen per batch with equal
    odds): each training batch, with probability ``mix_prob``, is mixed by :meth:`mix_batch`, and its targets become
    class probabilities that the loss reads as they are. Label smoothing composes with them: the loss smooths the
    mixed target, ``(1 - label_smoothing) * mixed + label_smoothing / num_classes``. A mixed image has no one class
    to score, so while mixing is on (either alpha above 0) training logs ``train/loss`` (against the mixed targets)
    and no ``train/acc``, ``train/f1`` or ``train/acc_top5``; validation and test batches are never mixed.

    **Test-time augmentation** (``tta``): at test (``test/acc``, ``test/loss``, ...) and predict time
    (``predict_step``, :meth:`predict_tensors`, so ``zoo predict`` and ``zoo serve`` too) the class probabilities
    are the mean over the views of :func:`tta_views`, costing one forward per view. Validation stays un-augmented,
    so checkpoint selection and early stopping see the same numbers with or without it. ``forward`` returns the
    plain logits either way; an export runs :meth:`predict_tensors`, so it carries the views of the model's ``tta``.
    A flip only helps where a mirror image is the same class (photos, not digits or text).

    Args:
        num_classes: number of output classes.
        in_channels: channels of the input images.
        img_size: input height and width (an int for square images).
        loss: ``"ce"`` (cross-entropy) or ``"focal"``.
        label_smoothing: label smoothing for either loss.
        focal_gamma: focusing parameter of the focal loss.
        mixup_alpha: the Beta(alpha, alpha) of mixup's mixing weights; 0 turns mixup off (0.2 to 0.4 are usual).
        cutmix_alpha: the Beta(alpha, alpha) of CutMix's kept area; 0 turns CutMix off (1.0 is usual).
        mix_prob: the probability that a training batch is mixed (when an alpha is above 0).
        tta: ``"none"``, ``"flip"``, ``"flip_shift"`` or ``"flip_crop"`` (see :func:`tta_views`).
        **optim_args: optimizer and schedule, see :class:`~zoo.tasks.base.TaskModule`.
    """

    data_links = ("num_classes", "in_channels", "img_size")
    #: Whether the network needs exactly ``img_size`` (e.g. an MLP) or accepts any spatial size (global pooling).
    fixed_input_size: bool = True

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        img_size: int | tuple[int, int] = 32,
        loss: LossName = "ce",
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        tta: str = "none",
        **optim_args: Any,
    ) -> None:
        super().__init__(
            num_classes=num_classes, loss=loss, label_smoothing=label_smoothing, focal_gamma=focal_gamma, **optim_args
        )
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        for name, alpha in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if not 0 <= alpha < math.inf:  # written so that NaN fails too
                raise ValueError(f"{name} must be a finite number >= 0 (0 turns it off), got {alpha}")
        if not 0 <= mix_prob <= 1:
            raise ValueError(f"mix_prob must be in [0, 1], got {mix_prob}")
        check_tta(tta)
        self.in_channels = in_channels
        self.img_size = _pair(img_size)
        self.example_input_array = torch.zeros(2, in_channels, *self.img_size)
        # (num_classes, transform) of mix_batch, rebuilt when reset_classifier changes the classes; in a tuple, so
        # that the transform (an nn.Module) stays out of the model's submodules and summary.
        self._mixer: tuple[int, v2.Transform] | None = None

    @property
    def mixes(self) -> bool:
        """Whether training batches are mixed (``mixup_alpha`` or ``cutmix_alpha`` above 0, ``mix_prob`` above 0)."""
        hp = self.hparams
        return (hp.mixup_alpha > 0 or hp.cutmix_alpha > 0) and hp.mix_prob > 0

    @property
    def tta(self) -> str:
        """The test-time augmentation of test and predict time; settable on a loaded model (``zoo predict --tta``)."""
        return self.hparams.tta

    @tta.setter
    def tta(self, value: str) -> None:
        self.hparams.tta = check_tta(value)  # saved with the next checkpoint, as if given at init

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, num_features)`` before the classifier."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the expected shape when ``x`` does not fit the network."""
        channels, (height, width) = self.in_channels, self.img_size
        ok = x.ndim == 4 and x.shape[1] == channels
        if ok and self.fixed_input_size:
            ok = tuple(x.shape[2:]) == (height, width)
        if not ok:
            spatial = f"{height}, {width}" if self.fixed_input_size else "H, W"
            raise ValueError(
                f"{type(self).__name__} expects input of shape (B, {channels}, {spatial}), got {tuple(x.shape)}"
            )

    def preprocessing(self) -> dict[str, Any]:
        return {"input": "image", "in_channels": self.in_channels, "img_size": list(self.img_size)}

    # --- mixup and CutMix ------------------------------------------------------------------------------------------
    def mix_batch(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch mixed by mixup or CutMix, with probability ``mix_prob`` (else returned as it is).

        Image ``i`` is mixed with image ``i - 1`` (the first with the last), in the proportion ``lam`` drawn from
        ``Beta(alpha, alpha)``: mixup blends whole images, ``lam * x_i + (1 - lam) * x_(i-1)``; CutMix pastes a box of
        ``x_(i-1)`` into ``x_i``, ``lam`` being the area left (of ``H x W``; a volume's box runs through its depth).
        The target becomes the same mixture of the two one-hot rows, ``(B, num_classes)``.

        Raises:
            ValueError: naming the valid range when a class index is outside ``[0, num_classes)``.
        """
        hp = self.hparams
        if not self.mixes or (hp.mix_prob < 1 and float(torch.rand(())) >= hp.mix_prob):
            return x, target
        if self._mixer is None or self._mixer[0] != self.num_classes:
            mixers = [v2.MixUp(alpha=hp.mixup_alpha, num_classes=self.num_classes)] if hp.mixup_alpha > 0 else []
            if hp.cutmix_alpha > 0:
                mixers.append(v2.CutMix(alpha=hp.cutmix_alpha, num_classes=self.num_classes))
            self._mixer = (self.num_classes, mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers))
        mixer = self._mixer[1]
        try:  # torchvision takes 5-d batches as videos: its box spans the last two axes
            mixed, soft = mixer(tv_tensors.Video(x) if x.ndim == 5 else x, target)
        except RuntimeError:
            self.check_target(target)  # one_hot's own message does not name the range
            raise
        return mixed.as_subclass(torch.Tensor), soft.to(x.dtype) if x.is_floating_point() else soft

    def step(self, batch: Any, batch_idx: int, split: Split) -> StepOutput:
        """The classification step, on a mixed batch in training when mixing is on; the metrics of such a batch are
        left out (see the class docstring)."""
        if split != "train" or not self.mixes:
            return super().step(batch, batch_idx, split)
        x, target = batch
        output = super().step(self.mix_batch(x, target), batch_idx, split)
        # No metric values for the mixed (or, at mix_prob < 1, maybe unmixed) batches: training logs no accuracy
        # while mixing is on, rather than one against the argmax of a blend.
        output.values.pop("preds")
        output.values.pop("target")
        return output

    def epoch_values(self, split: Split, loss: MeanMetric, metrics: MetricCollection | None) -> dict[str, Any]:
        return super().epoch_values(split, loss, None if split == "train" and self.mixes else metrics)

    # --- test-time augmentation ------------------------------------------------------------------------------------
    def tta_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The log of the mean class probabilities over the views of ``tta`` (:func:`tta_views`), ``(B, C)``: logits
        whose softmax is that mean, so losses and metrics take them as they take the forward's."""
        log_probs = torch.stack([self(view).log_softmax(-1) for view in tta_views(x, self.tta)])  # (V, B, C)
        # log(mean_v p_v) in log space: probabilities below float precision in one view still count.
        return torch.logsumexp(log_probs, dim=0) - math.log(len(log_probs))

    def step_logits(self, inputs: tuple[torch.Tensor, ...], split: Split) -> torch.Tensor:
        if split == "test" and self.tta != "none":
            return self.tta_log_probs(*inputs)
        return super().step_logits(inputs, split)

    def predict_batch(self, batch: Any) -> torch.Tensor:
        """Class probabilities ``(B, num_classes)``, averaged over the views of ``tta``."""
        if self.tta == "none":
            return super().predict_batch(batch)
        x = batch[0] if isinstance(batch, (tuple, list)) else batch  # `(x,)`, or a training-form `(x, target)`
        return self.tta_log_probs(x).exp()

    def predict_tensors(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.tta == "none":
            return super().predict_tensors(x)
        return {"probabilities": self.tta_log_probs(x).exp()}

    def example_batch(self, batch_size: int = 8, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Random inputs shaped like ``example_input_array`` and targets cycling over (up to) four classes."""
        x = torch.randn(batch_size, *self.example_input_array.shape[1:], generator=generator)
        return x, torch.arange(batch_size) % min(4, self.num_classes)
