"""FastPath: channels-last weights, torch.compile and the bf16 check, alone, with weight averaging and from a recipe."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import QUIET, quiet_trainer
from lightning.pytorch.callbacks import EMAWeightAveraging

import zoo
from callbacks import FastPath, cpu_has_native_bf16
from callbacks import fast_path as fast_path_module
from recipes import digits_cnn
from recipes.cli import RECIPES_DIR


def _trainer(*callbacks: L.Callback, precision: str = "32-true", steps: int = 4) -> L.Trainer:
    return quiet_trainer(max_steps=steps, precision=precision, limit_val_batches=2, callbacks=list(callbacks))


def _loader(model: L.LightningModule, batches: int = 4) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(0)
    data = [model.example_batch(8, generator) for _ in range(batches)]
    return torch.utils.data.DataLoader(data, batch_size=None)


class CompileProbe(L.Callback):
    """Whether the model's forward ran under torch.compile's tracer, seen from inside the forward."""

    def __init__(self) -> None:
        self.traced = False

    def setup(self, trainer, pl_module, stage):
        forward = pl_module.forward

        def probed(*args, **kwargs):
            self.traced |= torch.compiler.is_compiling()
            return forward(*args, **kwargs)

        pl_module.forward = probed


def test_channels_last_converts_conv_weights_and_leaves_state_dict_keys():
    model = zoo.create_model("cnn_digits")
    keys = list(model.state_dict())
    _trainer(FastPath(compile=False)).fit(model, _loader(model), _loader(model))
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert all(not p.is_contiguous() for p in convs if p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1)
    assert list(model.state_dict()) == keys
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    model = zoo.create_model("resnet18_cifar").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=torch.channels_last)
        assert torch.allclose(model(x), expected, atol=1e-4, rtol=1e-4)


def test_models_without_conv_weights_are_left_alone():
    model = zoo.create_model("mlp_small")
    before = {name: p.stride() for name, p in model.named_parameters()}
    _trainer(FastPath(compile=False)).fit(model, _loader(model))
    assert {name: p.stride() for name, p in model.named_parameters()} == before


@pytest.mark.slow
def test_compiled_training_matches_eager_and_survives_weight_averaging():
    """Compiled and eager runs from the same seed end with close weights; EMA averages the plain module."""

    def run(*callbacks: L.Callback) -> tuple[L.LightningModule, CompileProbe]:
        torch.manual_seed(0)
        model, probe = zoo.create_model("cnn_digits"), CompileProbe()
        _trainer(probe, *callbacks, steps=6).fit(model, _loader(model))  # training only: one graph to compile
        return model, probe

    eager, eager_probe = run()
    compiled, compiled_probe = run(FastPath(channels_last=False), EMAWeightAveraging(decay=0.9))
    assert not eager_probe.traced and compiled_probe.traced
    assert list(compiled.state_dict()) == list(eager.state_dict())
    # EMA put its average into the module at the end: not the eager weights, but near them
    differences = [(a - b).abs().max().item() for a, b in zip(compiled.parameters(), eager.parameters(), strict=True)]
    assert 0 < max(differences) < 0.5


def test_cpu_bf16_detection_reads_the_flags(tmp_path: Path):
    x86, arm, old = tmp_path / "x86", tmp_path / "arm", tmp_path / "old"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n")
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    old.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert cpu_has_native_bf16(str(x86)) is True
    assert cpu_has_native_bf16(str(arm)) is True
    assert cpu_has_native_bf16(str(old)) is False
    assert cpu_has_native_bf16(str(tmp_path / "absent")) is None


def test_slow_bf16_warns_and_fp32_does_not(monkeypatch):
    monkeypatch.setattr(fast_path_module, "cpu_has_native_bf16", lambda: False)
    model = zoo.create_model("mlp_small")
    with pytest.warns(UserWarning, match="without native bf16"):
        _trainer(FastPath(compile=False), precision="bf16-mixed", steps=1).fit(model, _loader(model))
    fp32 = _trainer(precision="32-true")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert not fast_path_module.warn_if_slow_bf16(fp32)


def test_compile_without_a_cpp_compiler_says_so(monkeypatch):
    monkeypatch.setattr(fast_path_module.shutil, "which", lambda name: None)
    model = zoo.create_model("mlp_small")
    with pytest.raises(RuntimeError, match="needs a C\\+\\+ compiler"):
        _trainer(FastPath()).fit(model, _loader(model))


@pytest.mark.slow
def test_fast_config_turns_on_bf16_channels_last_and_compile_beside_the_defaults():
    cli = digits_cnn.main(["fit", "-c", str(Path(RECIPES_DIR) / "fast.yaml"), "--trainer.fast_dev_run=2", *QUIET])
    names = [type(callback).__name__ for callback in cli.trainer.callbacks]
    assert "FastPath" in names and "NonFiniteGuard" in names and "ExactResume" in names  # appended, not replacing
    assert cli.trainer.precision == "bf16-mixed"
    convs = [p for p in cli.model.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert torch.isfinite(cli.trainer.callback_metrics["test/loss"])


def test_recipes_warn_about_emulated_bf16_without_the_fast_path(monkeypatch):
    monkeypatch.setattr(fast_path_module, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="without native bf16"):
        digits_cnn.main(["fit", "--trainer.precision=bf16-mixed", "--trainer.fast_dev_run=1", *QUIET])
