"""Classification losses that ``F.cross_entropy`` does not cover."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Multiclass focal loss (Lin et al., 2017): cross-entropy scaled by ``(1 - p_t) ** gamma``, batch mean.

    ``gamma=0`` gives plain cross-entropy. ``target`` holds class indices ``(B,)`` or probabilities ``(B, C)``.

    Args:
        logits: ``(B, C)`` unnormalized scores.
        target: class indices ``(B,)`` or class probabilities ``(B, C)``.
        gamma: focusing parameter; larger values down-weight well-classified examples.
        label_smoothing: as in ``F.cross_entropy``.
    """
    num_classes = logits.shape[-1]
    probs_target = target if target.ndim == logits.ndim else F.one_hot(target, num_classes).to(logits.dtype)
    if label_smoothing:
        probs_target = probs_target * (1 - label_smoothing) + label_smoothing / num_classes
    log_p = F.log_softmax(logits, dim=-1)
    # Modulating factor from the probability of each target class, weighted by the target distribution.
    weight = (1 - log_p.exp()).pow(gamma)
    return -(probs_target * weight * log_p).sum(-1).mean()
