"""``zoo kfold``: k-fold cross-validation of a recipe or of any ``zoo fit`` configuration.

zoo kfold --recipe digits_cnn --folds 5
zoo kfold --recipe digits_cnn --folds 5 --trainer.max_epochs 10 --output logs/digits_cnn/kfold_e10
zoo kfold --folds 5 -- --model cnn --data Digits --trainer.max_epochs 10

Arguments: the tool's own flags (``--recipe``, ``--folds``, ``--output``, ``--config``) and then ``fit``'s; any other
flag goes to ``fit`` as on its command line, and so does everything after a ``--`` (``fit``'s ``--config`` goes
there). Fold ``i`` is one ``fit`` in this process with ``--data.init_args.num_folds <folds> --data.init_args.fold i``
(its validation split is fold ``i`` of the training data, stratified by class; the rest trains) and
``--test_after_fit false``: the test split is not for choosing a model. With a TensorBoard or CSV logger each fold
logs into ``<output>/fold_<i>/``; with another logger, or none, the run policy picks its folder as for any ``fit``.

A fold's value is the best validation value of the model's metric (its task's ``monitor``, ``val/acc`` for
classifiers): the ``best_model_score`` of the checkpoint callback that follows it, also stored in the fold's best
checkpoint. The tool prints a table of the folds and the mean ± sample standard deviation (``ddof=1``), and writes
``<output>/kfold.json``. A datamodule whose validation split is not drawn from its training data (one without
``num_folds`` and ``fold``: see ``ImageDataModule`` and ``TensorSplitsDataModule``) is refused.
"""

from __future__ import annotations

import inspect
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch.callbacks import ModelCheckpoint

from recipes.cli import ZooCLI
from recipes.tools.command import check_output_folder, named_errors, tool_parser
from recipes.tools.fitting import fit, fit_config, logger_folder_args, run_folder, split_tool_args
from zoo.checkpoint import import_class, read_checkpoint


@dataclass
class FoldResult:
    """One fold's run: its best validation value, the epoch of its best checkpoint, and where it lies."""

    fold: int
    value: float
    best_epoch: int
    run_dir: str | None
    best_checkpoint: str
    seconds: float


@dataclass
class KFoldResult:
    """The folds of a cross-validation and the mean and sample standard deviation of their values."""

    metric: str
    mode: str
    num_folds: int
    recipe: str | None
    fit_args: list[str]
    folds: list[FoldResult] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        """The fold values, in fold order."""
        return [fold.value for fold in self.folds]

    @property
    def mean(self) -> float:
        """Mean of the fold values."""
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation (``ddof=1``) of the fold values; NaN for a single fold."""
        return statistics.stdev(self.values) if len(self.values) > 1 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Everything, as written to ``kfold.json``."""
        return {**asdict(self), "mean": self.mean, "std": self.std}


def check_fold_support(config: Namespace) -> tuple[str, str]:
    """The model's metric and its direction (its task's ``monitor``), once the parsed ``fit`` config is one that k-fold
    can run: a datamodule that takes ``num_folds`` and ``fold``, left at no folds.

    Raises:
        ValueError: naming the datamodule class without fold support, or the fold option given by hand.
    """
    if not config.get("data") or not config.data.get("class_path"):
        raise ValueError("no datamodule: give a recipe (--recipe) or a --data for fit")
    data_class = import_class(config.data.class_path, trusted=None)
    parameters = inspect.signature(data_class.__init__).parameters
    if "num_folds" not in parameters or "fold" not in parameters:
        raise ValueError(
            f"{data_class.__name__} has no fold support (no num_folds and fold arguments): k-fold needs a "
            "datamodule that draws its validation split from its training data, such as the subclasses of "
            "datamodules.ImageDataModule (Digits, MNIST, CIFAR10, ImageFolder) that pass num_folds and fold on"
        )
    init_args = config.data.get("init_args") or {}
    for name in ("num_folds", "fold"):
        if init_args.get(name):
            raise ValueError(
                f"the fit arguments set data.init_args.{name}={init_args.get(name)}; zoo kfold sets the folds "
                "itself: give their number with --folds"
            )
    return import_class(config.model.class_path, trusted=None).monitor


def fold_args(config: Namespace, num_folds: int, fold: int, output: Path) -> list[str]:
    """The arguments that make a ``fit`` train fold ``fold``: the fold options, no test, and for a TensorBoard or CSV
    logger the run folder ``<output>/fold_<fold>``."""
    args = [f"--data.init_args.num_folds={num_folds}", f"--data.init_args.fold={fold}", "--test_after_fit=false"]
    return args + logger_folder_args(config, output, f"fold_{fold}")


def fold_result(cli: ZooCLI, fold: int, metric: str, seconds: float) -> FoldResult:
    """What a finished fold's checkpoint callback for ``metric`` recorded: its best value and checkpoint.

    Raises:
        ValueError: when the run kept no best checkpoint of ``metric`` (no validation ran, or no callback follows it).
    """
    checkpoint = next(
        (cb for cb in cli.trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.monitor == metric),
        None,
    )
    if checkpoint is None:
        raise ValueError(f"fold {fold}: no ModelCheckpoint monitors {metric}; keep the default checkpoint callback")
    if checkpoint.best_model_score is None or not checkpoint.best_model_path:
        raise ValueError(
            f"fold {fold}: no best value of {metric} was recorded; give a budget in which validation runs (whole "
            "epochs: --trainer.max_epochs with --trainer.limit_train_batches, rather than --trainer.max_steps)"
        )
    epoch = int(read_checkpoint(checkpoint.best_model_path)["epoch"])
    run_dir = run_folder(cli)
    best = str(Path(checkpoint.best_model_path).resolve())
    return FoldResult(fold, float(checkpoint.best_model_score), epoch, run_dir, best, seconds)


def kfold(recipe: str | None, num_folds: int, fit_args: Sequence[str], output: str | Path) -> KFoldResult:
    """Train ``recipe`` (or ``zoo fit`` with ``fit_args``) once per fold and collect each fold's best value.

    Args:
        recipe: a recipe's name (``digits_cnn``), or ``None`` for ``zoo fit``'s configuration.
        num_folds: number of folds, at least 2.
        fit_args: ``fit``'s arguments, as on its command line.
        output: folder of ``kfold.json`` and of the folds' runs (TensorBoard and CSV loggers).

    Raises:
        ValueError: for fewer than 2 folds, a datamodule without fold support, or a fold that recorded no value.
    """
    if num_folds < 2:
        raise ValueError(f"--folds must be at least 2, got {num_folds}")
    output = Path(output)
    config = fit_config(recipe, fit_args)
    metric, mode = check_fold_support(config)
    result = KFoldResult(metric, mode, num_folds, recipe, list(fit_args))
    for fold in range(num_folds):
        print(f"fold {fold + 1}/{num_folds}", file=sys.stderr)
        start = time.perf_counter()
        cli = fit(recipe, [*fit_args, *fold_args(config, num_folds, fold, output)])
        result.folds.append(fold_result(cli, fold, metric, time.perf_counter() - start))
    return result


def print_result(result: KFoldResult) -> None:
    """The folds as a rich table, then the mean ± sample standard deviation."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.num_folds}-fold cross-validation: best {result.metric} ({result.mode})")
    for column in ("fold", result.metric, "best epoch", "run folder"):
        table.add_column(column)
    for fold in result.folds:
        table.add_row(str(fold.fold), f"{fold.value:.4f}", str(fold.best_epoch), str(fold.run_dir))
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    console.print(f"{result.metric}: {result.mean:.4f} ± {result.std:.4f} (mean ± sample std over {result.num_folds})")


def _parser() -> ArgumentParser:
    parser = tool_parser("kfold", __doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=str | None, default=None, help="a recipe's name (default: zoo fit's config)")
    parser.add_argument("--folds", type=int, default=5, help="number of folds, at least 2")
    parser.add_argument(
        "--output",
        type=str | None,
        default=None,
        help="folder of kfold.json and the folds' runs (default: "
        "logs/<recipe>/kfold, logs/zoo/kfold without a recipe); must not hold them yet",
    )
    return parser


def main(args: Sequence[str] | None = None) -> KFoldResult:
    """``zoo kfold``: one ``fit`` per fold, a table of their best values, and ``kfold.json`` (see the module doc).

    Raises:
        SystemExit: ``error: ...`` for an unknown recipe, a datamodule without folds, or a taken output folder.
    """
    parser = _parser()
    tool_args, fit_args = split_tool_args(parser, sys.argv[1:] if args is None else args)
    options = parser.parse_args(tool_args)
    output = Path(options.output or Path("logs", options.recipe or "zoo", "kfold"))
    check_output_folder(output, ["kfold.json", *(f"fold_{fold}" for fold in range(max(options.folds, 0)))], False)
    with named_errors():
        result = kfold(options.recipe, options.folds, fit_args, output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "kfold.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    print_result(result)
    print(f"wrote {output / 'kfold.json'}")
    return result
