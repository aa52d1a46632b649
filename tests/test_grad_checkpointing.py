"""Gradient checkpointing of the ResNet, ViT and GPT families: the same loss, gradients and BatchNorm statistics
as without it (dropout and drop-path included: the recomputation replays the random state), used in training only,
and exports unaffected."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import zoo
import zoo.layers.checkpointing
from zoo.layers.attention import KVCache

#: family -> a small model with random layers (dropout, drop-path) and the number of blocks it checkpoints
FAMILIES: dict[str, tuple[Callable[[bool], nn.Module], int]] = {
    "resnet": (
        lambda on: zoo.create_model(
            "resnet20_cifar", widths=(4, 8, 8), stem_width=4, layers=(2, 1, 1), drop_rate=0.2, grad_checkpointing=on
        ),
        4,
    ),
    "vit": (
        lambda on: zoo.create_model(
            "vit_tiny_patch4_32",
            img_size=16,
            embed_dim=16,
            num_heads=2,
            depth=3,
            drop_rate=0.1,
            drop_path_rate=0.3,
            grad_checkpointing=on,
        ),
        3,
    ),
    "gpt": (lambda on: zoo.create_model("gpt_test", dropout=0.2, grad_checkpointing=on), 2),
}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls of ``torch.utils.checkpoint.checkpoint`` made by the zoo."""
    counted: list[int] = []
    original = zoo.layers.checkpointing.checkpoint

    def counting(*args, **kwargs):
        counted.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(zoo.layers.checkpointing, "checkpoint", counting)
    return counted


def _pair(family: str) -> tuple[nn.Module, nn.Module, int]:
    build, blocks = FAMILIES[family]
    torch.manual_seed(0)
    plain, checkpointed = build(False), build(True)
    checkpointed.load_state_dict(plain.state_dict())
    return plain, checkpointed, blocks


def _step(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.train()
    torch.manual_seed(1)  # the same dropout masks for both models
    loss = model.batch_loss(batch)
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", FAMILIES)
def test_same_loss_gradients_and_statistics(family: str, calls: list[int]) -> None:
    plain, checkpointed, blocks = _pair(family)
    batch = plain.example_batch(4, torch.Generator().manual_seed(2))
    loss, grads = _step(plain, batch)
    assert calls == []
    loss_ck, grads_ck = _step(checkpointed, batch)
    assert len(calls) == blocks  # every block ran under checkpoint
    torch.testing.assert_close(loss_ck, loss, rtol=0, atol=1e-6)
    assert grads_ck.keys() == grads.keys() and len(grads) == len(list(plain.parameters()))
    torch.testing.assert_close(grads_ck, grads, rtol=1e-5, atol=1e-6)
    # BatchNorm running statistics are updated once, not again by the recomputation
    torch.testing.assert_close(dict(checkpointed.named_buffers()), dict(plain.named_buffers()), rtol=0, atol=0)
    assert checkpointed.hparams.grad_checkpointing is True


@pytest.mark.parametrize("family", FAMILIES)
def test_not_used_in_eval_or_without_gradients(family: str, calls: list[int]) -> None:
    plain, checkpointed, _ = _pair(family)
    x = plain.example_batch(3, torch.Generator().manual_seed(2))[0]
    plain.eval(), checkpointed.eval()
    torch.testing.assert_close(checkpointed(x), plain(x), rtol=0, atol=0)
    checkpointed.train()
    with torch.no_grad():
        checkpointed(x)
    assert calls == []


def test_gpt_generation_with_the_cache_runs_without_checkpointing(calls: list[int]) -> None:
    model = zoo.create_model("gpt_test", grad_checkpointing=True).train()
    assert model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4).shape == (1, 7)
    model(torch.tensor([[1, 2, 3]]), [KVCache() for _ in model.transformer.blocks])  # caches are written to: no rerun
    assert calls == []


@pytest.mark.parametrize("family", FAMILIES)
def test_export_traces_the_same_graph(family: str, calls: list[int]) -> None:
    """Even a training-mode ``torch.export`` of a checkpointing model traces no checkpoint: the plain model's graph."""
    plain, checkpointed, _ = _pair(family)
    x = plain.example_batch(3, torch.Generator().manual_seed(2))[0]
    graphs = [torch.export.export(model.train(), (x,)).graph_module.code for model in (plain, checkpointed)]
    assert graphs[1] == graphs[0] and calls == []
