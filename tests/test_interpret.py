"""recipes.tools.interpret against captum and hand computations, and `zoo explain` through its real entry point."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from conftest import QUIET
from PIL import Image

import zoo
from recipes import digits_cnn
from recipes.console import main as zoo_main
from recipes.tools import explain
from recipes.tools.interpret import (
    attention_heatmap,
    attention_maps,
    attention_rollout,
    integrated_gradients,
    integration_points,
    saliency,
)


def _with_statistics(model: zoo.ImageClassifier, shape: tuple[int, ...]) -> zoo.ImageClassifier:
    """The model in eval mode after a few training-mode batches: BatchNorm statistics away from (0, 1), so the
    network is not positively homogeneous along the path (where any quadrature is exact)."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, *shape) + 0.5)
    return model.eval()


MODELS = {
    "cnn_digits": (lambda: zoo.create_model("cnn_digits"), (1, 8, 8)),
    # the preset's architecture (basic blocks 2-2-2-2, CIFAR stem) at an eighth of its width, for CPU time
    "resnet18_cifar": (lambda: zoo.create_model("resnet18_cifar", widths=(8, 16, 32, 64), stem_width=8), (3, 16, 16)),
}


@pytest.fixture(params=sorted(MODELS))
def model_and_input(request):
    build, shape = MODELS[request.param]
    model = _with_statistics(build(), shape)
    return model, torch.randn(3, *shape), torch.full((1, *shape), -0.5)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_equal_captum(model_and_input, method):
    model, x, baseline = model_and_input
    target = [0, 3, 7]
    ours = integrated_gradients(model, x, target, baseline, steps=16, method=method, chunk_size=20)
    theirs, delta = IntegratedGradients(model).attribute(
        x, baseline.expand_as(x), target=target, n_steps=16, method=method, return_convergence_delta=True
    )
    scale = theirs.abs().max()
    torch.testing.assert_close(ours.attributions, theirs, rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(ours.delta, delta, rtol=1e-4, atol=1e-5 * scale)


def test_saliency_equals_captum(model_and_input):
    model, x, _ = model_and_input
    theirs = Saliency(model).attribute(x.clone().requires_grad_(True), target=2, abs=True)
    torch.testing.assert_close(saliency(model, x, 2, reduce="none"), theirs)
    torch.testing.assert_close(saliency(model, x, 2), theirs.amax(dim=1))  # (B, H, W): the largest over channels


def test_completeness_within_one_percent_with_enough_steps():
    """sum(attributions) = F(x) - F(x'): the delta falls with the steps, under 1% of the gap at 256 Riemann steps
    (the trapezoid error of a ReLU network's kinked path integrand falls as 1/steps)."""
    model = _with_statistics(zoo.create_model("cnn_digits"), (1, 8, 8))
    x, baseline = torch.randn(4, 1, 8, 8), torch.full((1, 1, 8, 8), -1.0)
    with torch.no_grad():
        target = model(x).argmax(dim=1)
        gap = (model(x) - model(baseline)).gather(1, target[:, None]).squeeze(1)
    coarse = integrated_gradients(model, x, None, baseline, steps=8, method="riemann_trapezoid", chunk_size=512)
    fine = integrated_gradients(model, x, None, baseline, steps=256, method="riemann_trapezoid", chunk_size=512)
    torch.testing.assert_close(fine.attributions.flatten(1).sum(dim=1) - gap, fine.delta)
    assert (fine.delta.abs() <= 0.01 * gap.abs()).all(), (fine.delta, gap)
    assert fine.delta.abs().max() < coarse.delta.abs().max() / 4


def test_integration_points_match_the_quadrature_rules():
    alphas, weights = integration_points("gausslegendre", 5)
    assert math.isclose(float(weights.sum()), 1.0) and 0 < alphas.min() < alphas.max() < 1
    assert math.isclose(float((weights * alphas**8).sum()), 1 / 9, rel_tol=1e-12)  # exact up to degree 2n - 1
    for method in ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"):
        alphas, weights = integration_points(method, 1000)
        assert math.isclose(float((weights * alphas).sum()), 0.5, abs_tol=1e-3)
    with pytest.raises(ValueError, match="Unknown integration method"):
        integration_points("simpson", 10)


def test_chunks_do_not_change_the_result():
    model = _with_statistics(zoo.create_model("cnn_digits"), (1, 8, 8))
    x = torch.randn(3, 1, 8, 8)
    one = integrated_gradients(model, x, 1, steps=10, chunk_size=1)  # one step of 3 inputs per forward
    all_at_once = integrated_gradients(model, x, 1, steps=10, chunk_size=1000)
    torch.testing.assert_close(one.attributions, all_at_once.attributions)


def test_model_is_left_as_it_was():
    """Training flags per module, requires_grad per parameter, no .grad written, BatchNorm statistics untouched."""
    model = zoo.create_model("cnn_digits").train()
    model.features[0].eval()  # a frozen stage stays frozen, the rest keeps training
    model.head.weight.requires_grad_(False)
    modes = {name: module.training for name, module in model.named_modules()}
    flags = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    state = {key: value.clone() for key, value in model.state_dict().items()}
    x = torch.randn(2, 1, 8, 8)
    integrated_gradients(model, x, 0, steps=4)
    saliency(model, x)
    assert {name: module.training for name, module in model.named_modules()} == modes
    assert {name: parameter.requires_grad for name, parameter in model.named_parameters()} == flags
    assert all(parameter.grad is None for parameter in model.parameters())
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())


def test_bad_arguments_are_named():
    model = zoo.create_model("cnn_digits").eval()
    with pytest.raises(TypeError, match="floating-point batch"):
        saliency(model, torch.zeros(2, 1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target must be .* in \[0, 10\)"):
        integrated_gradients(model, torch.randn(2, 1, 8, 8), target=10, steps=4)
    with pytest.raises(ValueError, match="does not broadcast"):
        integrated_gradients(model, torch.randn(2, 1, 8, 8), baseline=torch.zeros(3, 8, 8), steps=4)
    with pytest.raises(TypeError, match="no attention"):
        attention_maps(model, torch.randn(2, 1, 8, 8))


# --- attention ---------------------------------------------------------------------------------------------------


def _tiny_vit() -> zoo.VisionTransformer:
    return zoo.create_model("vit_tiny_patch4_32", depth=2, embed_dim=48, img_size=16).eval()


def test_vit_attention_is_what_the_model_uses():
    """Each block's weights, times its values and projected, give the attention module's own output (the fused
    kernel's); rows sum to 1; shapes are (B, heads, 1 + patches, 1 + patches)."""
    model = _tiny_vit()
    x = torch.randn(2, 3, 16, 16)
    seen = {}
    hooks = [
        block.attn.register_forward_hook(lambda module, args, out, i=i: seen.update({i: (args[0], out)}))
        for i, block in enumerate(model.blocks)
    ]
    maps = attention_maps(model, x)
    for hook in hooks:
        hook.remove()
    assert list(maps) == ["blocks.0", "blocks.1"]
    for index, weights in enumerate(maps.values()):
        assert weights.shape == (2, 3, 17, 17)
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, 3, 17))
        attn, (inputs, output) = model.blocks[index].attn, seen[index]
        v = attn.qkv(inputs).unflatten(-1, (3, attn.num_heads, attn.head_dim))[:, :, 2].transpose(1, 2)  # (B, h, N, d)
        torch.testing.assert_close(attn.proj((weights @ v).transpose(1, 2).flatten(2)), output, atol=1e-5, rtol=1e-4)


def test_transformer_attention_matches_a_manual_computation():
    """TransformerClassifier: softmax(q k^T / sqrt(d)) with padded keys masked, from the block's own projections."""
    model = zoo.create_model("transformer_cls_test").eval()
    x, lengths = torch.randint(0, 8, (2, 16)), torch.tensor([16, 9])
    block = model.encoder.blocks[0]
    seen = {}
    hook = block.attn.register_forward_hook(lambda module, args, out: seen.update(query=args[0]))
    maps = attention_maps(model, x, lengths)
    hook.remove()
    weights = maps["encoder.0"]
    attn, query = block.attn, seen["query"]
    q, k = (
        proj(query).unflatten(-1, (attn.num_heads, attn.head_dim)).transpose(1, 2)
        for proj in (attn.q_proj, attn.k_proj)
    )
    scores = q @ k.transpose(-2, -1) / math.sqrt(attn.head_dim)  # (B, heads, T, T)
    scores[1, :, :, 9:] = float("-inf")  # the second sequence's padded keys
    torch.testing.assert_close(weights, scores.softmax(dim=-1))
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, 2, 16))
    assert weights[1, :, :, 9:].abs().max() == 0


def test_gpt_attention_is_causal():
    model = zoo.create_model("gpt_test")
    maps = attention_maps(model, torch.randint(0, 16, (1, 10)))
    assert list(maps) == ["block.0", "block.1"] and model.training  # eval inside, training mode given back
    for weights in maps.values():
        assert torch.equal(weights.triu(diagonal=1), torch.zeros_like(weights))
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(1, 2, 10))


def test_attention_rollout_by_hand():
    """Two layers over 2 tokens; mean over heads, half identity, row renormalization, product from the first."""
    first = torch.tensor([[[[0.5, 0.5], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]])  # (1, 2 heads, 2, 2)
    second = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])
    a1 = 0.5 * torch.tensor([[0.75, 0.25], [0.0, 1.0]]) + 0.5 * torch.eye(2)
    a2 = 0.5 * torch.tensor([[0.0, 1.0], [1.0, 0.0]]) + 0.5 * torch.eye(2)
    torch.testing.assert_close(attention_rollout({"0": first, "1": second})[0], a2 @ a1)
    torch.testing.assert_close(attention_rollout([torch.eye(3).expand(2, 4, 3, 3)]), torch.eye(3).expand(2, 3, 3))


def test_attention_heatmap_covers_the_image():
    heat = attention_heatmap(_tiny_vit(), torch.randn(2, 3, 16, 16))
    assert heat.shape == (2, 16, 16) and heat.min() >= 0
    torch.testing.assert_close(heat.flatten(1).amax(dim=1), torch.ones(2), atol=0.05, rtol=0)


# --- zoo explain ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of the digits recipe after a few steps (the recipe writes the datamodule's hyperparameters)."""
    folder = tmp_path_factory.mktemp("digits")
    args = ["fit", "--trainer.max_epochs=1", "--trainer.limit_train_batches=5", "--test_after_fit=false", *QUIET]
    cwd = os.getcwd()
    os.chdir(folder)  # the recipe logs under ./logs
    try:
        cli = digits_cnn.main(args)
        return Path(cli.trainer.logger.log_dir).resolve() / "checkpoints" / "last.ckpt"
    finally:
        os.chdir(cwd)


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()
        return image.size


@pytest.mark.parametrize("method", ["ig", "saliency"])
def test_explain_writes_overlays_of_data_samples(digits_checkpoint, tmp_path, method):
    written = zoo_main(["explain", "--ckpt_path", str(digits_checkpoint), "--data_samples", "3", "--data", "Digits",
                        "--method", method, "--steps", "8", "--output", str(tmp_path / "out")])  # fmt: skip
    assert [path.name for path in written] == [f"{index:02d}_sample{index}_{method}.png" for index in range(3)]
    assert all(_png_size(path) == explain.FIGURE_SIZE for path in written)


def test_explain_reads_image_files_with_the_training_preprocessing(digits_checkpoint, tmp_path):
    image = tmp_path / "digit.png"
    Image.fromarray((torch.rand(24, 24) * 255).to(torch.uint8).numpy()).save(image)  # resized to 8x8
    written = explain.main(["--ckpt_path", str(digits_checkpoint), "--inputs", str(image), "--output", str(tmp_path)])
    assert [path.name for path in written] == ["00_digit_ig.png"] and _png_size(written[0]) == explain.FIGURE_SIZE
    from datamodules import DigitsDataModule
    from recipes.tools.predictor import Predictor

    prep = Predictor.from_checkpoint(digits_checkpoint).preprocessing  # what the datamodule saved in the checkpoint
    assert (prep.img_size, prep.mean, prep.std) == ((8, 8), DigitsDataModule.mean, DigitsDataModule.std)


def test_explain_attention_of_a_vit_preset(tmp_path):
    image = tmp_path / "cat.png"
    Image.fromarray((torch.rand(32, 32, 3) * 255).to(torch.uint8).numpy()).save(image)
    written = explain.main(["--model", "vit_tiny_patch4_32", "--inputs", str(image), "--method", "attention",
                            "--output", str(tmp_path)])  # fmt: skip
    assert _png_size(written[0]) == explain.FIGURE_SIZE


def test_explain_errors_name_the_problem(digits_checkpoint, tmp_path):
    ckpt = ["--ckpt_path", str(digits_checkpoint)]
    with pytest.raises(SystemExit, match=r"Cannot decode image .*missing\.png"):
        explain.main([*ckpt, "--inputs", str(tmp_path / "missing.png")])
    with pytest.raises(SystemExit, match="no such checkpoint file"):
        explain.main(["--ckpt_path", str(tmp_path / "none.ckpt"), "--data_samples", "1", "--data", "Digits"])
    samples = ["--data_samples", "1", "--data", "Digits"]
    with pytest.raises(SystemExit, match="needs a VisionTransformer"):
        explain.main([*ckpt, *samples, "--method", "attention", "--output", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"--target must be a class index in \[0, 10\)"):
        explain.main([*ckpt, *samples, "--target", "12"])
    with pytest.raises(SystemExit):  # a usage error: which datamodule's test images
        explain.main(["--model", "cnn_digits", "--data_samples", "1"])
    with pytest.raises(SystemExit, match="takes image classifiers; GPT is not one"):
        explain.main(["--model", "gpt_test", "--inputs", str(tmp_path / "missing.png")])
