"""Running ``fit`` from a tool: a recipe's configuration (or ``zoo fit``'s) with extra arguments and callbacks, the
way the search, cross-validation and finder tools run it.

A tool's command line holds its own flags and ``fit``'s: every flag the tool does not know goes to ``fit``, and so
does everything after a ``--`` (``fit``'s ``--config`` must go there)::

    zoo tune --recipe digits_cnn --n_trials 8 --trainer.max_epochs 5
    zoo tune --space space.yaml -- --model cnn_bn --data Digits -c my.yaml
"""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from recipes.cli import DEFAULT_CONFIG_FILES, RECIPES_DIR, ZooCLI, _parser_kwargs, expand_short_names
from recipes.runs import RunConfigCallback, logger_specs
from zoo.checkpoint import import_class


def split_fit_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(tool arguments, fit arguments)``: the arguments before and after the first ``--``."""
    args = list(args)
    if "--" not in args:
        return args, []
    index = args.index("--")
    return args[:index], args[index + 1 :]


def split_tool_args(parser: ArgumentParser, args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(tool arguments, fit arguments)``: before a ``--``, the flags ``parser`` knows (with their values) are the
    tool's and every other argument is ``fit``'s; after it, all are ``fit``'s.

    >>> from recipes.tools.command import tool_parser
    >>> parser = tool_parser("kfold", "")
    >>> _ = parser.add_argument("--folds", type=int)
    >>> split_tool_args(parser, ["--folds", "3", "--trainer.max_epochs=2", "--", "--config", "fit.yaml"])
    (['--folds', '3'], ['--trainer.max_epochs=2', '--config', 'fit.yaml'])
    """
    before, after = split_fit_args(args)
    own = {option for action in parser._actions for option in action.option_strings}
    tool: list[str] = []
    fit_args: list[str] = []
    index = 0
    while index < len(before):
        arg = before[index]
        flag = arg.split("=", 1)[0]
        takes_value = flag not in ("-h", "--help") and "=" not in arg
        if flag in own:
            tool.append(arg)
            if takes_value and index + 1 < len(before) and not before[index + 1].startswith("--"):
                tool.append(before[index + 1])
                index += 1
        else:
            fit_args.append(arg)
        index += 1
    return tool, fit_args + after


def recipe_names() -> list[str]:
    """The recipes: each ``recipes/<name>.py`` with its ``<name>.yaml``."""
    return sorted(path.stem for path in Path(RECIPES_DIR).glob("*.yaml") if path.with_suffix(".py").is_file())


def recipe_yaml(recipe: str) -> Path:
    """The YAML of recipe ``recipe``.

    Raises:
        ValueError: an unknown recipe, naming close matches.
    """
    names = recipe_names()
    if recipe not in names:
        close = difflib.get_close_matches(recipe, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else f" The recipes: {', '.join(names)}."
        raise ValueError(f"unknown recipe {recipe!r}.{hint}")
    return Path(RECIPES_DIR) / f"{recipe}.yaml"


def config_files(recipe: str | None) -> list[str]:
    """The default config files of recipe ``recipe`` (the shared defaults, then its YAML), or of ``zoo fit``."""
    return [*DEFAULT_CONFIG_FILES, *([str(recipe_yaml(recipe))] if recipe else [])]


def cli_kwargs(recipe: str | None) -> dict[str, Any]:
    """What :class:`~recipes.cli.ZooCLI` takes to run as recipe ``recipe`` (its config files and run name), or as
    ``zoo fit`` for ``None``."""
    return {"parser_kwargs": _parser_kwargs(*config_files(recipe)), "run_name": recipe or "zoo"}


class _ParseOnly(ZooCLI):
    """ZooCLI that parses and builds nothing: the configuration a ``fit`` would run."""

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass


@contextlib.contextmanager
def argv_alone() -> Iterator[None]:
    """``sys.argv`` without the tool's arguments while LightningCLI runs: it warns when it sees both."""
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        yield
    finally:
        sys.argv = argv


def fit_config(recipe: str | None, fit_args: Sequence[str]) -> Namespace:
    """The parsed ``fit`` configuration of ``recipe`` (or ``zoo fit``) with ``fit_args``; nothing is built."""
    with argv_alone():
        cli = _ParseOnly(args=["fit", *expand_short_names(fit_args)], **cli_kwargs(recipe))
    return cli.config.fit


def fit(recipe: str | None, fit_args: Sequence[str], callbacks: Sequence[Any] = ()) -> ZooCLI:
    """Run ``fit`` of ``recipe`` (or ``zoo fit``) with ``fit_args`` and the extra ``callbacks`` (objects, added to
    the configured ones); the finished CLI, whose ``trainer`` and ``model`` can be read."""
    kwargs = cli_kwargs(recipe)
    if callbacks:
        kwargs["trainer_defaults"] = {"callbacks": list(callbacks)}
    with argv_alone():
        return ZooCLI(args=["fit", *expand_short_names(fit_args)], **kwargs)


def logger_folder_args(config: Namespace, save_dir: str | os.PathLike[str], folder: str) -> list[str]:
    """The arguments that put a run of ``config`` (a parsed ``fit`` config) in ``<save_dir>/<folder>/`` when its one
    logger is a TensorBoard or CSV logger; none for another logger or none (the run policy picks its folder)."""
    specs = logger_specs(config.trainer)
    single = not isinstance(config.trainer.logger, list) and len(specs) == 1
    if not single or not issubclass(import_class(specs[0].class_path, trusted=None), (TensorBoardLogger, CSVLogger)):
        return []
    # save_dir/name/version: an empty name puts the version folder right under save_dir
    return [
        f"--trainer.logger.init_args.save_dir={save_dir}",
        "--trainer.logger.init_args.name=",
        f"--trainer.logger.init_args.version={folder}",
    ]


def run_folder(cli: ZooCLI) -> str | None:
    """The folder a finished run wrote its config and checkpoints into (``None`` without one)."""
    for callback in cli.trainer.callbacks:
        if isinstance(callback, RunConfigCallback) and callback.run_dir:
            return str(Path(callback.run_dir).resolve())
    log_dir = cli.trainer.log_dir
    return os.path.abspath(log_dir) if log_dir else None
