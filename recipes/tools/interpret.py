"""What a classifier looks at: saliency, integrated gradients and attention maps, with plain autograd.

- :func:`saliency`: the absolute gradient of the target logit with respect to the input, the largest over the
  channels (Simonyan et al., 2014, "Deep Inside Convolutional Networks").
- :func:`integrated_gradients`: ``(x - x') * integral_0^1 dF(x' + a (x - x')) / dx da`` (Sundararajan et al.,
  2017), the integral by a Riemann sum or Gauss-Legendre quadrature at the nodes captum uses, the scaled inputs
  run through the model in chunks; with the convergence delta ``sum(attributions) - (F(x) - F(x'))``, which the
  completeness axiom says is zero.
- :func:`attention_maps`: every layer's attention weights ``(B, heads, T, S)`` of a ViT (recomputed from its
  attention modules' inputs by forward hooks, so the fused kernel keeps running) or of a zoo Transformer (its own
  ``attention_maps``); :func:`attention_rollout` combines the layers (Abnar & Zuidema, 2020) and
  :func:`attention_heatmap` turns a ViT's class-token rollout into an image-sized map.

Checked against captum's ``Saliency`` and ``IntegratedGradients`` on the same models and inputs
(``tests/test_interpret.py``). Each function leaves the model as it found it: training flags of every module,
``requires_grad`` of the parameters, and no ``.grad`` written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import nn

IntegrationMethod = Literal["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre"]
Target = int | Sequence[int] | torch.Tensor | None


class Attribution(NamedTuple):
    """Attributions shaped like the inputs, and the convergence delta ``(B,)`` of each input."""

    attributions: torch.Tensor
    delta: torch.Tensor


@contextmanager
def inspecting(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters inside; every module's mode and every ``requires_grad`` restored after.

    Gradients are then taken with respect to the inputs only: nothing accumulates in ``.grad`` and autograd keeps
    no graph of the weights.
    """
    modes = [(module, module.training) for module in model.modules()]
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    model.eval()
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def _check_inputs(model: nn.Module, inputs: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point() or inputs.ndim < 2:
        kind = f"{inputs.dtype} {tuple(inputs.shape)}" if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise TypeError(
            f"{name} needs a floating-point batch (B, ...) of model inputs, got {kind}; token ids have no gradient "
            "(attribute to the embeddings instead)"
        )
    parameter = next(model.parameters(), None)
    if parameter is not None:
        inputs = inputs.to(device=parameter.device, dtype=parameter.dtype)
    return inputs.detach()


def _logits(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    logits = model(inputs)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != inputs.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"attributions need a model returning logits (B, num_classes) for (B, ...) inputs; got {shape}"
        )
    return logits


def _targets(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """Class indices ``(B,)``: the given ones (an int for every input), or the predicted ones for ``None``."""
    batch, classes = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    index = torch.as_tensor(target, device=logits.device).long().flatten()
    if index.numel() == 1:
        index = index.expand(batch)
    if index.numel() != batch or bool(((index < 0) | (index >= classes)).any()):
        raise ValueError(f"target must be one class index or one per input, each in [0, {classes}), got {target}")
    return index


def _selected(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, target[:, None]).squeeze(1)  # (B,)


def saliency(
    model: nn.Module, inputs: torch.Tensor, target: Target = None, reduce: Literal["max", "none"] = "max"
) -> torch.Tensor:
    """``|dF_target(x) / dx|``, ``(B, H, W)`` for images (the largest over channels), or as the inputs with
    ``reduce="none"`` (captum's ``Saliency(abs=True)``).

    Args:
        model: a classifier returning logits ``(B, num_classes)``.
        inputs: ``(B, C, H, W)`` (or any ``(B, ...)`` float batch), preprocessed as in training.
        target: the class of every input (an int, or one per input); ``None``: the predicted class.
        reduce: ``"max"`` over the channel dimension 1, or ``"none"``.
    """
    inputs = _check_inputs(model, inputs, "saliency")
    with inspecting(model):
        x = inputs.clone().requires_grad_(True)
        logits = _logits(model, x)
        (grad,) = torch.autograd.grad(_selected(logits, _targets(target, logits)).sum(), x)
    grad = grad.abs()
    if reduce == "max":
        return grad.amax(dim=1) if grad.ndim > 2 else grad
    if reduce != "none":
        raise ValueError(f"reduce must be 'max' or 'none', got {reduce!r}")
    return grad


def integration_points(method: IntegrationMethod, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The points ``alpha`` in [0, 1] and weights of a quadrature of ``integral_0^1 f(alpha)`` with ``steps`` terms
    (captum's ``approximation_parameters``); float64.

    >>> alphas, weights = integration_points("riemann_trapezoid", 3)
    >>> alphas.tolist(), weights.tolist()
    ([0.0, 0.5, 1.0], [0.1666..., 0.3333..., 0.1666...])
    """
    if steps < 1 or (method != "gausslegendre" and steps < 2):
        raise ValueError(f"steps must be >= 2 (>= 1 for gausslegendre), got {steps}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)  # on [-1, 1]
        return torch.from_numpy(0.5 * (nodes + 1)), torch.from_numpy(0.5 * weights)
    weights = torch.full((steps,), 1 / steps, dtype=torch.float64)
    if method == "riemann_trapezoid":
        weights[[0, -1]] /= 2
        return torch.linspace(0, 1, steps, dtype=torch.float64), weights
    if method == "riemann_left":
        return torch.linspace(0, 1 - 1 / steps, steps, dtype=torch.float64), weights
    if method == "riemann_right":
        return torch.linspace(1 / steps, 1, steps, dtype=torch.float64), weights
    if method == "riemann_middle":
        return torch.linspace(1 / (2 * steps), 1 - 1 / (2 * steps), steps, dtype=torch.float64), weights
    raise ValueError(f"Unknown integration method {method!r}; choose one of {IntegrationMethod.__args__}")


def integrated_gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target = None,
    baseline: torch.Tensor | float | None = None,
    steps: int = 50,
    method: IntegrationMethod = "gausslegendre",
    chunk_size: int = 64,
) -> Attribution:
    """Integrated gradients of the target logit and their convergence delta.

    Args:
        model: a classifier returning logits ``(B, num_classes)``.
        inputs: ``(B, ...)`` float batch, preprocessed as in training.
        target: the class of every input (an int, or one per input); ``None``: the predicted class.
        baseline: the reference input ``x'``: a tensor broadcastable to ``inputs`` or a number; ``None``: zeros
            (the dataset mean, for inputs normalized by it).
        steps: terms of the quadrature.
        method: ``"gausslegendre"`` (captum's default) or a Riemann rule, ``"riemann_trapezoid"``, ...
        chunk_size: scaled inputs per forward pass (at least one step's ``B`` inputs); bounds the memory.

    Returns:
        ``Attribution(attributions, delta)``: attributions shaped like ``inputs``; ``delta`` ``(B,)`` is
        ``sum(attributions) - (F(x) - F(x'))``, which shrinks as ``steps`` grows.

    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> result = integrated_gradients(model, torch.randn(2, 1, 2, 2), target=0, steps=8)
    >>> result.attributions.shape, bool(result.delta.abs().max() < 1e-5)  # exact for a linear model
    (torch.Size([2, 1, 2, 2]), True)
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    inputs = _check_inputs(model, inputs, "integrated_gradients")
    base = torch.zeros_like(inputs) if baseline is None else torch.as_tensor(baseline).detach().to(inputs)
    try:
        base = base.expand_as(inputs)
    except RuntimeError as error:
        raise ValueError(f"baseline {tuple(base.shape)} does not broadcast to inputs {tuple(inputs.shape)}") from error
    alphas, weights = integration_points(method, steps)
    batch, diff = inputs.shape[0], inputs - base
    per_chunk = max(1, chunk_size // batch)  # steps per forward pass
    total = torch.zeros_like(inputs)
    with inspecting(model):
        with torch.no_grad():
            ends = _logits(model, torch.cat([inputs, base]))
        target = _targets(target, ends[:batch])
        for start in range(0, steps, per_chunk):
            alpha = alphas[start : start + per_chunk].to(inputs)
            # (k, B, ...) -> (k * B, ...): step-major, as captum stacks them
            scaled = (base + alpha.view(-1, *[1] * inputs.ndim) * diff).flatten(0, 1).requires_grad_(True)
            logits = _logits(model, scaled)
            (grad,) = torch.autograd.grad(_selected(logits, target.repeat(len(alpha))).sum(), scaled)
            weight = weights[start : start + per_chunk].to(inputs).view(-1, *[1] * inputs.ndim)
            total += (grad.unflatten(0, (len(alpha), batch)) * weight).sum(dim=0)
    attributions = total * diff
    gap = _selected(ends[:batch], target) - _selected(ends[batch:], target)
    return Attribution(attributions, attributions.flatten(1).sum(dim=1) - gap)


def attention_maps(
    model: nn.Module, inputs: torch.Tensor, lengths: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Attention weights ``(B, heads, T_query, T_key)`` of every layer, in forward order, for ``inputs``.

    A :class:`~zoo.VisionTransformer` gives ``blocks.<i>`` (the class token is position 0, the patches follow in
    row-major order); a zoo Transformer (``TransformerClassifier``, ``GPT``, ``Seq2SeqTransformer``, the LSTM
    seq2seq) gives the maps of its own ``attention_maps``, with ``lengths`` for padded batches.

    Raises:
        TypeError: for a model with no attention.
    """
    from zoo.vit import Attention, VisionTransformer

    parameter = next(model.parameters(), None)
    if parameter is not None:  # the device only: token ids stay integers
        inputs = inputs.to(parameter.device)
        lengths = None if lengths is None else lengths.to(parameter.device)
    with inspecting(model), torch.no_grad():
        if isinstance(model, VisionTransformer):
            maps: dict[str, torch.Tensor] = {}
            hooks = [
                module.register_forward_hook(_recorder(maps, name.removesuffix(".attn")))
                for name, module in model.named_modules()
                if isinstance(module, Attention)
            ]
            try:
                model(inputs)
            finally:
                for hook in hooks:
                    hook.remove()
            return maps
        own = getattr(model, "attention_maps", None)
        if callable(own):
            return dict(own(inputs) if lengths is None else own(inputs, lengths))
    raise TypeError(
        f"{type(model).__name__} has no attention to show: attention_maps takes a VisionTransformer or a model "
        "with its own attention_maps (the zoo Transformers)"
    )


def _recorder(maps: dict[str, torch.Tensor], name: str) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x = args[0]
        batch, tokens, _ = x.shape
        qkv = module.qkv(x).reshape(batch, tokens, 3, module.num_heads, module.head_dim)  # (B, N, 3, heads, hd)
        q, k = qkv.permute(2, 0, 3, 1, 4)[:2]  # 2 x (B, heads, N, hd)
        maps[name] = (q @ k.transpose(-2, -1) / math.sqrt(module.head_dim)).softmax(dim=-1)  # (B, heads, N, N)

    return hook


def attention_rollout(
    maps: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
    head_fusion: Literal["mean", "max", "min"] = "mean",
    residual: bool = True,
) -> torch.Tensor:
    """Attention rollout ``(B, T, T)``: how much each position of the last layer draws on each input position.

    Each layer's heads are fused, the residual connection is counted as half the attention (``0.5 A + 0.5 I``),
    rows are renormalized, and the layers are multiplied from the first: ``R = A_L ... A_1`` (Abnar & Zuidema,
    2020). Needs self-attention maps (square, every layer the same size).
    """
    layers = list(maps.values()) if isinstance(maps, Mapping) else list(maps)
    if not layers or any(layer.ndim != 4 or layer.shape[-1] != layer.shape[-2] for layer in layers):
        raise ValueError("attention_rollout needs self-attention maps (B, heads, T, T), at least one layer")
    fuse = {"mean": lambda a: a.mean(dim=1), "max": lambda a: a.amax(dim=1), "min": lambda a: a.amin(dim=1)}
    if head_fusion not in fuse:
        raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")
    eye = torch.eye(layers[0].shape[-1], dtype=layers[0].dtype, device=layers[0].device)
    rollout = eye.expand_as(layers[0][:, 0])
    for layer in layers:
        attention = fuse[head_fusion](layer)  # (B, T, T)
        if residual:
            attention = 0.5 * attention + 0.5 * eye
        attention = attention / attention.sum(dim=-1, keepdim=True)
        rollout = attention @ rollout
    return rollout


def attention_heatmap(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The class token's attention rollout over a ViT's patches, ``(B, H, W)`` at the input size (bilinear), each
    map scaled to a maximum of 1."""
    from zoo.vit import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise TypeError(f"attention_heatmap needs a VisionTransformer, got {type(model).__name__}")
    height, width = inputs.shape[-2:]
    grid = (height // model.patch_size, width // model.patch_size)
    rollout = attention_rollout(attention_maps(model, inputs))  # (B, 1 + N, 1 + N)
    cls_row = rollout[:, 0, 1:].unflatten(1, grid)  # (B, gh, gw): the class token's draw on each patch
    cls_row = cls_row / cls_row.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return nn.functional.interpolate(cls_row[:, None], size=(height, width), mode="bilinear")[:, 0]
