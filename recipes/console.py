"""The ``zoo`` command: ``zoo list``, LightningCLI's subcommands over every registered model and datamodule (short
names: ``zoo fit --model cnn_bn --data MNIST``), and the tools (predict, serve, export, explain, quantize, tune, kfold,
lr-find, batch-size-find).

    zoo list
    zoo fit --model cnn_bn --data MNIST --data.data_dir ../shared/data/mnist
    zoo tune --recipe mnist_mlp
    python -m recipes.console fit --model cnn_digits --data Digits   # the same without the installed script
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

import zoo
from datamodules import DATAMODULES, SequenceDataModule
from recipes.cli import DEFAULT_CONFIG_FILES, USER_ERRORS, _cli, _parser_kwargs, expand_short_names


def print_registry() -> None:
    """Print every registered model and datamodule as tables."""
    from rich.console import Console
    from rich.table import Table

    models = Table(title=f"Models ({len(zoo.list_models())})")
    for column in ("name", "class", "task", "input", "params", "source"):
        models.add_column(column)
    for name in zoo.list_models():
        info = zoo.model_info(name)
        params = f"{info.num_params / 1e6:.2f}M" if info.num_params else "?"
        models.add_row(name, info.cls.__name__, info.task, info.input_spec.describe(), params, info.source)
    data = Table(title=f"Datamodules ({len(DATAMODULES)})")
    for column in ("name", "class", "classes", "input"):
        data.add_column(column)
    for name, cls in DATAMODULES.items():
        num_classes = getattr(cls, "num_classes", None)
        size = _data_input(cls)
        data.add_row(name, cls.__name__, str(num_classes) if isinstance(num_classes, int) else "from files", size)
    console = Console(width=None if sys.stdout.isatty() else 200)  # full names when piped
    console.print(models)
    console.print(data)


def _data_input(cls: type) -> str:
    """What a datamodule yields, for the table: image size, or the kind of sequences."""
    if isinstance(getattr(cls, "img_size", None), tuple):
        return "image " + "x".join(map(str, (cls.in_channels, *cls.img_size)))
    if issubclass(cls, SequenceDataModule):
        return f"tokens, ids < {cls.vocab_size}" if cls.vocab_size else "series (padded, with lengths)"
    return "from files"


#: ``zoo <tool>``: the programs of :mod:`recipes.tools` beside LightningCLI's subcommands.
TOOL_NAMES = ("export", "predict", "serve", "explain", "quantize", "tune", "kfold", "lr-find", "batch-size-find")


def _tool_main(name: str) -> Callable[[list[str]], Any]:
    """The ``main(args)`` of tool ``name``; the tools are imported when one is asked for (they need optional
    packages, which they import themselves when they run)."""
    from recipes.tools import explain, export, find, kfold, predict, quantize, serve, tune

    mains = {
        "export": export.main,
        "predict": predict.main,
        "serve": serve.main,
        "explain": explain.main,
        "quantize": quantize.main,
        "tune": tune.main,
        "kfold": kfold.main,
        "lr-find": find.lr_find_main,
        "batch-size-find": find.batch_size_find_main,
    }
    return mains[name]


def _tool(args: Sequence[str]) -> Callable[[list[str]], Any] | None:
    """The tool ``args`` ask for, or None for LightningCLI. ``zoo predict`` is the file/text predictor when given
    ``--inputs`` or ``--text``, else LightningCLI's ``predict`` over a datamodule."""
    name = args[0] if args else None
    if name not in TOOL_NAMES:
        return None
    if name == "predict" and not any(arg.split("=")[0] in ("--inputs", "--text") for arg in args):
        return None
    return _tool_main(name)


def main(args: Sequence[str] | None = None) -> Any:
    """The ``zoo`` command: ``zoo list``, the tools, or LightningCLI subcommands with short model/data names."""
    from_command_line, args = args is None, list(sys.argv[1:] if args is None else args)
    if args[:1] == ["list"]:
        print_registry()
        return None
    tool = _tool(args)
    if tool is not None:
        return tool(args[1:])
    if not args:
        rank_zero_info(f"usage: zoo {{list,fit,validate,test,predict,{','.join(TOOL_NAMES)}}} [--model NAME] ...")
    expanded = expand_short_names(args)
    argv = sys.argv
    if from_command_line:  # LightningCLI reads the expanded args; it warns when sys.argv holds arguments too
        sys.argv = argv[:1]
    try:
        return _cli(expanded, parser_kwargs=_parser_kwargs(*DEFAULT_CONFIG_FILES))
    finally:
        sys.argv = argv


def console() -> None:
    """The ``zoo`` console script: :func:`main`, whose return value must not become the exit status; the errors of
    :data:`USER_ERRORS` end it with their message and status 1."""
    try:
        main()
    except USER_ERRORS as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    console()
