"""Trainer options through the recipes' real entry points: precision, gradient accumulation and clipping, determinism.

Each test measures what the option does on a short real run (digits, CPU) rather than that the flag was accepted:
the weights one SGD step leaves, the accuracy a few epochs reach, the metrics two runs log.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from recipes import digits_cnn
from recipes.cli import ZooCLI
from recipes.console import main as zoo_main
from tests.conftest import QUIET, read_csv

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
#: One epoch of plain SGD (no momentum, decay or schedule): each step moves the weights by exactly ``-lr * grad``.
#: Callers set ``--trainer.limit_train_batches`` to the batches of one step: the epoch then ends with it and runs
#: validation, which the default EarlyStopping needs (`--trainer.max_steps=1` stops mid-epoch, and it raises).
SGD_ONE_EPOCH = [
    "--model.init_args.optimizer=sgd",
    "--model.init_args.momentum=0",
    "--model.init_args.weight_decay=0",
    "--model.init_args.scheduler=none",
    "--trainer.max_epochs=1",
    "--test_after_fit=false",
]
#: digits_cnn reaches about 0.97-0.98 test accuracy in this many epochs (about 1.5 s for all five on 2 idle CPU cores).
PRECISION_EPOCHS = 5
ACC_FLOOR = 0.9
#: Largest accepted gap in test accuracy between a mixed-precision run and its fp32 twin (2 points).
ACC_TOLERANCE = 0.02


class Recorder(L.Callback):
    """What one run did: its initial parameters, first training batches, fit metrics and classifier output dtypes."""

    def __init__(self, max_batches: int = 4) -> None:
        self.max_batches = max_batches
        self.initial: dict[str, torch.Tensor] = {}
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.fit_metrics: dict[str, torch.Tensor] = {}
        self.logit_dtypes: set[torch.dtype] = set()
        self.deterministic: bool | None = None
        self.device: torch.device | None = None
        self._hook = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the precision plugin converted the model and the sanity check ran (which changes no parameter).
        self.initial = parameters(pl_module)
        self.deterministic = torch.are_deterministic_algorithms_enabled()
        self.device = pl_module.device

        def record_dtype(module: torch.nn.Module, args: object, output: torch.Tensor) -> None:
            if module.training:
                self.logit_dtypes.add(output.dtype)

        self._hook = pl_module.get_classifier().register_forward_hook(record_dtype)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if len(self.batches) < self.max_batches:
            self.batches.append(tuple(t.detach().cpu().clone() for t in batch))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # `test_after_fit` replaces trainer.callback_metrics by the test's: keep the fit's.
        self.fit_metrics = {key: value.detach().cpu().clone() for key, value in trainer.callback_metrics.items()}


@pytest.fixture
def recorders(monkeypatch: pytest.MonkeyPatch) -> list[Recorder]:
    """A :class:`Recorder` on the Trainer of every CLI run in the test, in the order of the runs."""
    made: list[Recorder] = []
    original = getattr(ZooCLI, "before_fit", None)

    def before_fit(self: ZooCLI) -> None:
        if original is not None:
            original(self)
        made.append(Recorder())
        self.trainer.callbacks.append(made[-1])

    monkeypatch.setattr(ZooCLI, "before_fit", before_fit, raising=False)
    return made


@pytest.fixture
def restore_determinism() -> Iterator[None]:
    """`Trainer(deterministic=True)` switches torch's global flag on and leaves it on; put it back afterwards."""
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    if cublas is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


def parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in module.named_parameters()}


def flat(params: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.flatten().double() for p in params.values()])


def update(recorder: Recorder, cli: ZooCLI) -> torch.Tensor:
    """The change of all parameters over the run, as one float64 vector."""
    return flat(parameters(cli.model)) - flat(recorder.initial)


def assert_same_start(*recorders: Recorder) -> None:
    for recorder in recorders[1:]:
        torch.testing.assert_close(recorder.initial, recorders[0].initial, rtol=0, atol=0)


# --- precision -----------------------------------------------------------------------------------------------------
def _train_digits(precision: str, *args: str) -> float:
    cli = digits_cnn.main(
        ["fit", f"--trainer.max_epochs={PRECISION_EPOCHS}", f"--trainer.precision={precision}", *QUIET, *args]
    )
    acc = cli.trainer.callback_metrics["test/acc"].item()  # of the best checkpoint (test_after_fit)
    best = Path(cli.trainer.checkpoint_callback.best_model_path).name
    print(f"digits_cnn {precision} {' '.join(args)}: {PRECISION_EPOCHS} epochs, test/acc {acc:.4f} ({best})")
    return acc


@pytest.mark.slow
def test_bf16_mixed_on_cpu_trains_as_well_as_fp32(recorders, record_property):
    fp32 = _train_digits("32-true")
    bf16 = _train_digits("bf16-mixed")
    record_property("test_acc_fp32", fp32)
    record_property("test_acc_bf16_mixed", bf16)
    # bf16-mixed computes the forward pass in bfloat16 under autocast and keeps float32 weights.
    assert recorders[0].logit_dtypes == {torch.float32} and recorders[1].logit_dtypes == {torch.bfloat16}
    assert_same_start(*recorders)
    assert min(fp32, bf16) > ACC_FLOOR and abs(fp32 - bf16) <= ACC_TOLERANCE, (fp32, bf16)


def test_precision_64_runs_with_model_summary_and_gradient_monitor(recorders, capsys):
    """`--trainer.precision=64` end to end, through the model summary and GradientStatsMonitor (both once crashed)."""
    cli = digits_cnn.main(
        [
            "fit",
            "--trainer.precision=64",
            "--trainer.max_epochs=2",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=CSVLogger",
            "--trainer.callbacks.every_n_steps=10",  # the last default callback: GradientStatsMonitor
        ]
    )
    assert cli.trainer.precision == "64-true"
    assert {p.dtype for p in cli.model.parameters()} == {torch.float64} and recorders[0].initial
    assert all(p.dtype == torch.float64 for p in recorders[0].initial.values())
    assert recorders[0].logit_dtypes == {torch.float64}
    out = capsys.readouterr().out
    assert "In sizes" in out and "Total params" in out  # the summary ran the example input through the model
    acc = cli.trainer.callback_metrics["test/acc"]
    assert math.isfinite(acc.item()) and acc.item() > 0.5
    # 21 steps an epoch: the monitor sampled steps 0, 10, ..., 40, with finite norms.
    grad_norms = read_csv(cli.trainer.logger.log_dir)["grad/norm_total"]
    assert sorted(grad_norms) == [0, 10, 20, 30, 40]
    assert all(math.isfinite(value) and value > 0 for value in grad_norms.values())


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("precision", "dtype"), [("16-mixed", torch.float16), ("bf16-mixed", torch.bfloat16)])
def test_mixed_precision_on_gpu_trains_as_well_as_fp32(precision, dtype, recorders):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    gpu = ["--trainer.accelerator=gpu", "--trainer.devices=1"]
    fp32 = _train_digits("32-true", *gpu)
    mixed = _train_digits(precision, *gpu)
    assert all(recorder.device.type == "cuda" for recorder in recorders)
    assert recorders[0].logit_dtypes == {torch.float32} and recorders[1].logit_dtypes == {dtype}
    assert math.isfinite(mixed) and min(fp32, mixed) > ACC_FLOOR and abs(fp32 - mixed) <= ACC_TOLERANCE, (fp32, mixed)


# --- gradient accumulation and clipping ----------------------------------------------------------------------------
def _mlp_sgd_step(batches: int, *args: str) -> ZooCLI:
    """One SGD step over ``batches`` batches of an MLP on Digits (no BatchNorm, no dropout: the gradient is a plain
    mean over the samples)."""
    model = ["--model=MLP", "--model.init_args.dropout=0", "--model.init_args.lr=0.5"]
    return zoo_main(
        ["fit", *model, "--data=Digits", f"--trainer.limit_train_batches={batches}", *SGD_ONE_EPOCH, *QUIET, *args]
    )


def test_accumulating_two_batches_equals_one_batch_twice_the_size(recorders):
    accumulated = _mlp_sgd_step(2, "--trainer.accumulate_grad_batches=2", "--data.init_args.batch_size=32")
    large = _mlp_sgd_step(1, "--data.init_args.batch_size=64")
    micro = _mlp_sgd_step(1, "--data.init_args.batch_size=32")
    acc_rec, large_rec, micro_rec = recorders
    assert [cli.trainer.global_step for cli in (accumulated, large, micro)] == [1, 1, 1]
    assert [len(r.batches) for r in recorders] == [2, 1, 1]  # the accumulating run read two batches for its step
    assert_same_start(*recorders)
    # Same seed, same shuffle: the first 64 samples are the two batches of 32.
    for index in range(2):
        torch.testing.assert_close(torch.cat([b[index] for b in acc_rec.batches]), large_rec.batches[0][index])
    torch.testing.assert_close(micro_rec.batches[0], acc_rec.batches[0])

    step_acc, step_large, step_micro = (
        update(r, cli) for r, cli in zip(recorders, (accumulated, large, micro), strict=True)
    )
    gap_large = ((step_acc - step_large).norm() / step_large.norm()).item()
    gap_micro = ((step_acc - step_micro).norm() / step_acc.norm()).item()
    print(
        f"|step|: {step_acc.norm():.6f}; relative gap to batch 64: {gap_large:.2e}, to one batch of 32: {gap_micro:.3f}"
    )
    assert step_acc.norm() > 0
    torch.testing.assert_close(step_acc, step_large, rtol=1e-4, atol=1e-6)  # float32 sums in another order
    assert gap_micro > 0.05  # a single micro-batch (or summed, unscaled gradients) would be far off


def _cnn_sgd_step(*args: str) -> ZooCLI:
    """One SGD step with learning rate 1 of the digits recipe's conv-BN net; GradientStatsMonitor logs step 0."""
    model = ["--model.init_args.lr=1", "--model.init_args.dropout=0"]
    return digits_cnn.main(
        ["fit", *model, "--trainer.limit_train_batches=1", "--trainer.logger=CSVLogger", *SGD_ONE_EPOCH, *QUIET, *args]
    )


def test_gradient_clipping_bounds_the_step_of_the_digits_recipe(recorders):
    clip, clip_value = 0.1, 0.01  # the raw gradient has norm about 1.2 and elements up to about 0.06
    unclipped = _cnn_sgd_step()
    by_norm = _cnn_sgd_step(f"--trainer.gradient_clip_val={clip}")
    by_value = _cnn_sgd_step(f"--trainer.gradient_clip_val={clip_value}", "--trainer.gradient_clip_algorithm=value")
    assert by_norm.trainer.gradient_clip_val == clip and by_value.trainer.gradient_clip_algorithm == "value"
    assert_same_start(*recorders)
    runs = list(zip(recorders, (unclipped, by_norm, by_value), strict=True))
    step, step_norm, step_value = (update(r, cli) for r, cli in runs)
    # The monitor logs the raw gradient (before clipping): the same in all three runs.
    raw = [read_csv(cli.trainer.logger.log_dir)["grad/norm_total"][0] for cli in (unclipped, by_norm, by_value)]
    print(f"raw gradient norm {raw[0]:.4f}; |step| unclipped {step.norm():.4f}, clipped by norm {step_norm.norm():.6f}")
    assert raw[0] > 2 * clip and raw[1] == pytest.approx(raw[0], rel=1e-5) and raw[2] == pytest.approx(raw[0], rel=1e-5)
    assert step.norm().item() == pytest.approx(raw[0], rel=1e-4)  # lr = 1: the step is the gradient
    # Norm clipping rescales the whole gradient to norm `clip` (BatchNorm's parameters included): same direction.
    assert step_norm.norm().item() == pytest.approx(clip, rel=1e-4)
    torch.testing.assert_close(step_norm, step * (clip / step.norm()), rtol=1e-4, atol=1e-7)
    # Value clipping bounds every element at `clip_value` and leaves smaller ones as they were.
    clipped = step.abs() > clip_value
    print(f"value clipping at {clip_value}: {clipped.sum()} of {clipped.numel()} elements clipped")
    # rel 1e-5: the step is a difference of float32 weights near 1, rounded to about 6e-8
    assert step_value.abs().max().item() == pytest.approx(clip_value, rel=1e-5) and clipped.any()
    torch.testing.assert_close(step_value[clipped], step[clipped].sign() * clip_value, rtol=1e-5, atol=0)
    small = ~clipped
    torch.testing.assert_close(step_value[small], step[small], rtol=1e-4, atol=1e-7)


# --- determinism -----------------------------------------------------------------------------------------------------
def test_deterministic_runs_log_identical_metrics(recorders, restore_determinism):
    args = ["fit", "--trainer.max_epochs=2", "--trainer.deterministic=true", *QUIET]
    first, second = digits_cnn.main(args), digits_cnn.main(args)
    assert [r.deterministic for r in recorders] == [True, True]
    fit_metrics = [r.fit_metrics for r in recorders]
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= set(fit_metrics[0])
    test_metrics = [{k: v.cpu() for k, v in cli.trainer.callback_metrics.items()} for cli in (first, second)]
    assert "test/acc" in test_metrics[0]
    for one, two in (fit_metrics, test_metrics):
        assert one.keys() == two.keys()
        torch.testing.assert_close(one, two, rtol=0, atol=0)
    torch.testing.assert_close(first.model.state_dict(), second.model.state_dict(), rtol=0, atol=0)


# --- reachability --------------------------------------------------------------------------------------------------
RECIPES = sorted(path.stem for path in RECIPES_DIR.glob("*.yaml") if path.with_suffix(".py").is_file())


@pytest.mark.parametrize("recipe", [*RECIPES, "zoo"])
def test_accumulation_and_clipping_reach_every_recipe_config(recipe, capsys):
    options = ["fit", "--trainer.accumulate_grad_batches=2", "--trainer.gradient_clip_val=0.5", "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        if recipe == "zoo":
            zoo_main([*options[:1], "--model=mlp_small", "--data=Digits", *options[1:]])
        else:
            importlib.import_module(f"recipes.{recipe}").main(options)
    assert exit_info.value.code == 0
    trainer = yaml.safe_load(capsys.readouterr().out)["trainer"]
    assert trainer["accumulate_grad_batches"] == 2 and trainer["gradient_clip_val"] == 0.5  # over a recipe's 1.0


def test_the_readme_cluster_and_fsdp_flags_parse_into_the_recipe_config(capsys):
    """The multi-GPU, multi-node and FSDP flags of the README resolve (they need GPUs to run)."""
    options = ["--trainer.devices=8", "--trainer.num_nodes=2", "--trainer.sync_batchnorm=true"]
    fsdp = ["--trainer.strategy=FSDPStrategy", "--trainer.strategy.auto_wrap_policy=[zoo.vit.Block]"]
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module("recipes.cifar10_vit").main(["fit", *options, *fsdp, "--print_config"])
    assert exit_info.value.code == 0
    trainer = yaml.safe_load(capsys.readouterr().out)["trainer"]
    assert (str(trainer["devices"]), trainer["num_nodes"], trainer["sync_batchnorm"]) == ("8", 2, True)
    assert trainer["strategy"]["class_path"] == "lightning.pytorch.strategies.FSDPStrategy"
    assert trainer["strategy"]["init_args"]["auto_wrap_policy"] == ["zoo.vit.Block"]
