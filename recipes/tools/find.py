"""``zoo lr-find`` and ``zoo batch-size-find``: Lightning's learning-rate range test and batch-size scaling, run on the
model, data and Trainer that ``fit`` would build.

zoo lr-find --recipe digits_cnn                                  # writes lr_find.png, prints the suggestion
zoo lr-find --model cnn --data Digits --output digits_lr.png
zoo batch-size-find --recipe cifar10_resnet18 --trainer.accelerator gpu
zoo batch-size-find --recipe digits_cnn --max_trials 3 -- --config my_fit.yaml

Arguments as ``zoo kfold``: the tool's own flags, then ``fit``'s (anything the tool does not know, and everything
after a ``--``). Model and datamodule are built exactly as ``fit`` builds them (``ZooCLI`` with ``run=False``), from
the recipe's YAML after the shared defaults, or from ``zoo fit``'s defaults without ``--recipe``.

``lr-find`` trains from the initial weights for ``--num_training`` steps while the learning rate grows exponentially
from ``--min_lr`` to ``--max_lr`` (``Tuner.lr_find``), stopping early when the loss passes ``--early_stop_threshold``
times its best. It draws the smoothed training loss against the learning rate (``--output``, a PNG) with the
suggestion marked: the steepest descent of that curve against ``log10(lr)`` (:func:`suggest_lr`; Lightning 2.6's own
suggestion differentiates against ``lr`` itself, which on an exponential sweep favours the smallest rates, Lightning
#21141, and is printed beside it). ``batch-size-find`` doubles the datamodule's ``batch_size``
from its configured value (``Tuner.scale_batch_size``, mode ``power``), ``--steps_per_trial`` training steps each,
until a batch runs out of memory, a batch holds the whole training split, or ``--max_trials`` sizes have run.

Neither applies what it finds: weights and optimizer are restored, the configuration is not changed, and the command
prints the flag to pass to ``fit``. The suggested learning rate is a starting point to read off the curve: on small
models the loss is noisy and the steepest point moves between runs (Lightning #21141). Both run without a logger and
keep Lightning's temporary checkpoints (``.lr_find_*.ckpt``, ``.scale_batch_size_*.ckpt``) in a temporary folder,
removed afterwards, so nothing is left behind but the PNG.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse import ArgumentParser

from recipes.cli import ZooCLI, expand_short_names
from recipes.tools.command import check_output_file, named_errors, tool_parser
from recipes.tools.fitting import argv_alone, config_files, split_tool_args


@dataclass
class LRCurve:
    """The smoothed training loss at each learning rate of a range test, the suggested learning rate
    (:func:`suggest_lr`) and Lightning's own suggestion."""

    lrs: list[float]
    losses: list[float]
    suggestion: float | None
    lightning_suggestion: float | None = None


@dataclass
class Found:
    """What a finder found, the ``fit`` flag that would apply it, and the CLI whose model and data it ran on (left as
    configured)."""

    value: float | int | None
    flag: str | None
    cli: ZooCLI
    curve: LRCurve | None = None


def build_for_fit(recipe: str | None, fit_args: Sequence[str], root_dir: str) -> ZooCLI:
    """Model, datamodule and Trainer as ``fit`` of ``recipe`` (or ``zoo fit``) with ``fit_args`` builds them, but
    without a logger or a saved config, and with the Trainer's files in ``root_dir``."""
    # After the user's arguments, so they win: no logger, no run folder, Lightning's files in the temporary folder
    args = [*expand_short_names(fit_args), "--trainer.logger=false", f"--trainer.default_root_dir={root_dir}"]
    with argv_alone():
        return ZooCLI(
            args=args,
            run=False,
            parser_kwargs={"default_config_files": config_files(recipe)},
            run_name=recipe or "zoo",
            save_config_callback=None,
        )


def suggest_lr(lrs: Sequence[float], losses: Sequence[float], skip_begin: int = 10, skip_end: int = 1) -> float | None:
    """The learning rate where the loss falls fastest against ``log10(lr)``, the axis an exponential sweep steps evenly
    along; the first ``skip_begin`` and last ``skip_end`` points are left out, and non-finite losses (as Lightning's
    suggestion does). ``None`` with fewer than two points left.

    Lightning 2.6 differentiates against ``lr`` itself: a sweep's smallest steps then turn noise into the steepest
    slopes, and its suggestion lands on the flat start of the curve (Lightning #21141; its open fix #21171 uses the
    ``log10`` spacing as here).

    >>> import math
    >>> lrs = [10 ** (k / 10 - 6) for k in range(61)]  # 1e-6 .. 1
    >>> losses = [2 - math.tanh(2 * (math.log10(lr) + 2)) for lr in lrs]  # falls fastest at 1e-2
    >>> round(math.log10(suggest_lr(lrs, losses)), 6)
    -2.0
    """
    lrs_kept = torch.tensor(lrs[skip_begin : len(lrs) - skip_end], dtype=torch.float64)
    losses_kept = torch.tensor(losses[skip_begin : len(losses) - skip_end], dtype=torch.float64)
    finite = torch.isfinite(losses_kept)
    if int(finite.sum()) < 2:
        return None
    lrs_kept, losses_kept = lrs_kept[finite], losses_kept[finite]
    slopes = torch.gradient(losses_kept, spacing=[torch.log10(lrs_kept)])[0]
    return float(lrs_kept[torch.argmin(slopes)])


def find_lr(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    min_lr: float = 1e-8,
    max_lr: float = 1.0,
    num_training: int = 100,
    early_stop_threshold: float | None = 4.0,
) -> LRCurve:
    """Lightning's learning-rate range test (``Tuner.lr_find``) on ``model``; the model's learning rate is left as it
    was (``update_attr=False``) and its weights are restored.

    Raises:
        ValueError: when the finder did not run (``fast_dev_run`` skips it).
    """
    from lightning.pytorch.tuner import Tuner

    finder = Tuner(trainer).lr_find(
        model,
        datamodule=datamodule,
        min_lr=min_lr,
        max_lr=max_lr,
        num_training=num_training,
        early_stop_threshold=early_stop_threshold,
        update_attr=False,
    )
    if finder is None:
        raise ValueError("the learning-rate finder did not run: leave --trainer.fast_dev_run off")
    lrs = [float(lr) for lr in finder.results["lr"]]
    losses = [float(loss) for loss in finder.results["loss"]]
    return LRCurve(lrs, losses, suggest_lr(lrs, losses), finder.suggestion())


def plot_lr_curve(curve: LRCurve, path: str | Path, configured: float | None = None) -> Path:
    """Draw loss against learning rate (log scale) into the PNG ``path``, the suggestion and the configured learning
    rate marked; drawn on the Agg canvas, whatever pyplot's backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.plot(curve.lrs, curve.losses, color="tab:blue", label="training loss (smoothed)")
    ax.set_xscale("log")
    if curve.suggestion is not None:
        index = curve.lrs.index(curve.suggestion)
        ax.axvline(curve.suggestion, color="tab:red", linestyle="--", linewidth=1)
        ax.plot(curve.suggestion, curve.losses[index], "o", color="tab:red", label=f"suggestion {curve.suggestion:.3g}")
    if configured is not None:
        ax.axvline(configured, color="grey", linestyle=":", label=f"configured {configured:.3g}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title("LR range test: not applied; noisy on small models", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    return Path(path)


def _batch_size(datamodule: L.LightningDataModule) -> int:
    size = getattr(datamodule, "batch_size", None)
    if size is None:
        size = getattr(datamodule, "hparams", {}).get("batch_size")
    if isinstance(size, bool) or not isinstance(size, int):
        raise ValueError(
            f"{type(datamodule).__name__} has no integer batch_size (attribute or hyperparameter) to scale"
        )
    return size


def _set_batch_size(datamodule: L.LightningDataModule, size: int) -> None:
    """``size`` wherever Lightning's scaler may have set the batch size: the attribute and the hyperparameter."""
    if hasattr(datamodule, "batch_size"):
        datamodule.batch_size = size
    if "batch_size" in getattr(datamodule, "hparams", {}):
        datamodule.hparams["batch_size"] = size


def find_batch_size(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    max_trials: int = 25,
    steps_per_trial: int = 3,
) -> int:
    """The largest batch size that ran (``Tuner.scale_batch_size``, mode ``power``, from the datamodule's
    ``batch_size``); the datamodule's batch size and the model's weights are restored afterwards.

    Raises:
        ValueError: when the datamodule has no integer ``batch_size``, or the finder did not run.
    """
    from lightning.pytorch.tuner import Tuner

    start = _batch_size(datamodule)
    try:
        found = Tuner(trainer).scale_batch_size(
            model,
            datamodule=datamodule,
            mode="power",
            steps_per_trial=steps_per_trial,
            init_val=start,
            max_trials=max_trials,
            batch_arg_name="batch_size",
        )
    finally:
        _set_batch_size(datamodule, start)
    if found is None:
        raise ValueError("the batch-size finder did not run: leave --trainer.fast_dev_run off")
    return int(found)


def lr_flag(cli: ZooCLI) -> tuple[str, float | None]:
    """The ``fit`` flag that sets the learning rate (the optimizer's when ``--optimizer`` is given) and its
    configured value."""
    optimizer = cli.config.get("optimizer")
    if optimizer:
        return "--optimizer.init_args.lr", (optimizer.get("init_args") or {}).get("lr")
    return "--model.init_args.lr", cli.model.hparams.get("lr")


def _common(parser: ArgumentParser) -> None:
    parser.add_argument("--recipe", type=str | None, default=None, help="a recipe's name (default: zoo fit's config)")


def _lr_parser() -> ArgumentParser:
    parser = tool_parser("lr-find", __doc__.split("\n\n")[0])
    _common(parser)
    parser.add_argument("--output", type=str, default="lr_find.png", help="the PNG of loss against learning rate")
    parser.add_argument("--overwrite", type=bool, default=False, help="replace --output when it exists")
    parser.add_argument("--min_lr", type=float, default=1e-8, help="first learning rate of the sweep")
    parser.add_argument("--max_lr", type=float, default=1.0, help="last learning rate of the sweep")
    parser.add_argument("--num_training", type=int, default=100, help="training steps (learning rates) of the sweep")
    parser.add_argument(
        "--early_stop_threshold",
        type=float | None,
        default=4.0,
        help="stop once the loss exceeds this many times its best (null: sweep to --max_lr)",
    )
    return parser


def lr_find_main(args: Sequence[str] | None = None) -> Found:
    """``zoo lr-find``: the range test, its PNG, and the suggested learning rate with its flag (never applied).

    Raises:
        SystemExit: ``error: ...`` for an unknown recipe, a taken or misnamed ``--output``, or a finder that did not
            run.
    """
    parser = _lr_parser()
    tool_args, fit_args = split_tool_args(parser, sys.argv[1:] if args is None else args)
    options = parser.parse_args(tool_args)
    if not 0 < options.min_lr < options.max_lr:
        parser.error(f"need 0 < --min_lr < --max_lr, got {options.min_lr} and {options.max_lr}")
    output = check_output_file(options.output, options.overwrite, (".png",))
    with named_errors(), tempfile.TemporaryDirectory(prefix="zoo-lr-find-") as root:
        cli = build_for_fit(options.recipe, fit_args, root)
        curve = find_lr(
            cli.trainer,
            cli.model,
            cli.datamodule,
            options.min_lr,
            options.max_lr,
            options.num_training,
            options.early_stop_threshold,
        )
    flag, configured = lr_flag(cli)
    plot_lr_curve(curve, output, configured)
    print(f"swept {len(curve.lrs)} learning rates from {curve.lrs[0]:.3g} to {curve.lrs[-1]:.3g}; curve: {output}")
    if curve.suggestion is None:
        print("no suggestion: too few finite losses (raise --num_training, or give more training batches)")
        return Found(None, None, cli, curve)
    print(f"suggested lr: {curve.suggestion:.3g} (steepest descent of the smoothed loss against log lr)")
    theirs = "none" if curve.lightning_suggestion is None else f"{curve.lightning_suggestion:.3g}"
    print(f"configured lr: {configured}; Lightning's own suggestion (against lr, #21141): {theirs}")
    print(f"to try it: {flag} {curve.suggestion:.3g}")
    print("not applied: the curve is noisy on small models and its steepest point moves between runs; read the plot")
    return Found(curve.suggestion, f"{flag} {curve.suggestion:.3g}", cli, curve)


def _batch_parser() -> ArgumentParser:
    parser = tool_parser("batch-size-find", __doc__.split("\n\n")[0])
    _common(parser)
    parser.add_argument(
        "--max_trials", type=int, default=25, help="batch sizes tried at most, doubling from the configured one"
    )
    parser.add_argument("--steps_per_trial", type=int, default=3, help="training steps run at each batch size")
    return parser


def batch_size_find_main(args: Sequence[str] | None = None) -> Found:
    """``zoo batch-size-find``: the largest batch size that ran, doubling from the configured one, and its flag
    (never applied).

    Raises:
        SystemExit: ``error: ...`` for an unknown recipe, a datamodule without ``batch_size``, or a finder that did
            not run.
    """
    parser = _batch_parser()
    tool_args, fit_args = split_tool_args(parser, sys.argv[1:] if args is None else args)
    options = parser.parse_args(tool_args)
    if options.max_trials < 1 or options.steps_per_trial < 1:
        parser.error(
            f"need --max_trials and --steps_per_trial >= 1, got {options.max_trials}, {options.steps_per_trial}"
        )
    with named_errors(), tempfile.TemporaryDirectory(prefix="zoo-batch-size-find-") as root:
        cli = build_for_fit(options.recipe, fit_args, root)
        start = _batch_size(cli.datamodule)
        found = find_batch_size(cli.trainer, cli.model, cli.datamodule, options.max_trials, options.steps_per_trial)
    print(f"largest batch size that ran: {found} (doubling from the configured {start})")
    train_size = _train_size(cli.trainer)
    if train_size is not None and found >= train_size:
        print(f"the training split holds {train_size} samples: a batch of {found} is all of it")
    elif found >= start * 2 ** (options.max_trials - 1):
        print(f"stopped after --max_trials {options.max_trials} sizes: a larger batch may fit")
    flag = f"--data.init_args.batch_size {found}"
    print(f"to use it: {flag} (not applied; a larger batch usually wants a larger learning rate)")
    return Found(found, flag, cli)


def _train_size(trainer: L.Trainer) -> int | None:
    """Samples in the training split, when the loader's dataset has a length."""
    loader: Any = trainer.train_dataloader
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return None
