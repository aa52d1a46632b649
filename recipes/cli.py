"""LightningCLI for the zoo: the recipes' entry point, and what the ``zoo`` command (:mod:`recipes.console`) runs.

``ZooCLI`` builds the datamodule once and passes its sizes to the model (each task's ``data_links``), points the
default checkpoint and early stopping at the model's metric, applies the run policy of :mod:`recipes.runs` and can
test right after fitting. With ``--ckpt_path``, LightningCLI (2.6+) rebuilds the model from the hyperparameters saved
in the checkpoint, so ``test``/``predict`` work whatever the current config says about the model.

``zoo`` adds short names on top: ``zoo fit --model cnn_bn --data MNIST`` (a registered preset and a datamodule
name), ``zoo fit --model CNN`` (any model class): :func:`expand_short_names`.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

import zoo
from callbacks import DEFAULTS_YAML as CALLBACKS_YAML
from callbacks import CheckpointWriteError, FastPath, NonFiniteError, follow_monitor
from callbacks.fast_path import warn_if_slow_bf16
from datamodules import get_datamodule_class
from recipes.checkpoints import check_checkpoint_matches
from recipes.runs import (
    RunConfigCallback,
    apply_run_policy,
    checkpoint_run_folder,
    claim_run_folder,
    log_into_resumed_run,
)
from zoo.checkpoint import check_finite, import_class, read_checkpoint, to_primitive
from zoo.tasks import TaskModule

RECIPES_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULTS_YAML = os.path.join(RECIPES_DIR, "defaults.yaml")
#: The default config files of every run, in order: the default callbacks, then the shared trainer defaults.
DEFAULT_CONFIG_FILES = (CALLBACKS_YAML, DEFAULTS_YAML)
SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _task_classes() -> list[type[TaskModule]]:
    """Every subclass of TaskModule imported so far (the zoo's, and those of modules imported before the CLI)."""
    found, stack = {}, [TaskModule]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return list(found.values())


class ZooCLI(LightningCLI):
    """LightningCLI over every :class:`~zoo.tasks.TaskModule` and any LightningDataModule.

    Args:
        run_name: Folder of this program's runs under ``logs/`` when the logger config names none (no logger, a
            remote MLflow server), and the W&B project / MLflow experiment unless given.
    """

    def __init__(self, *args: Any, run_name: str = "zoo", **kwargs: Any) -> None:
        self.run_name = run_name
        self._resumed_run: dict[str, Any] | None = None
        kwargs.setdefault("model_class", TaskModule)
        kwargs.setdefault("datamodule_class", L.LightningDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_callback", RunConfigCallback)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit", type=bool, default=False, help="After `fit`, run `test` on the best checkpoint."
        )
        parser.add_argument(
            "--last_every_n_steps",
            type=int,
            default=0,
            help="Also rewrite last.ckpt every N optimizer steps, to resume inside an epoch (0: after epochs only).",
        )
        # The datamodule is built once, before the model, and each size a task takes from the data reaches the model
        # from it (LightningCLI's links applied on instantiation). A link whose target the chosen model lacks is
        # skipped by jsonargparse; `_from_data` keeps the configured value where the data has none, and refuses a
        # value the user gave that disagrees with the data (a link alone would overwrite it silently).
        for key in sorted({key for cls in _task_classes() for key in cls.data_links}):
            parser.link_arguments(
                "data", f"model.init_args.{key}", compute_fn=self._from_data(key), apply_on="instantiate"
            )

    def _run_config(self) -> Namespace:
        return self.config[self.subcommand] if self.subcommand else self.config

    def _from_data(self, key: str) -> Callable[[L.LightningDataModule], Any]:
        def compute(datamodule: L.LightningDataModule) -> Any:
            model = self._run_config().model
            given = model.init_args.get(key) if model.get("init_args") else None
            model_class = import_class(model.class_path, trusted=None)
            value = getattr(datamodule, key, None)
            if value is None or key not in getattr(model_class, "data_links", ()):
                return given  # the data has no such size, or the model does not take it from the data
            given, value = to_primitive(given, key), to_primitive(value, key)
            if given not in (to_primitive(_init_default(model_class, key), key), value):
                raise ValueError(
                    f"--model.init_args.{key}={given!r} disagrees with the data: {type(datamodule).__name__} has "
                    f"{key}={value!r}. Leave {key} out; it is set from the data."
                )
            return value

        return compute

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # Before LightningCLI replaces the model config by the checkpoint's hyperparameters: compare them first.
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        if config is None or not config.get("ckpt_path"):
            return
        try:
            checkpoint = read_checkpoint(config.ckpt_path)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"--ckpt_path {error}") from None
        check_finite(checkpoint["state_dict"], f"--ckpt_path {config.ckpt_path}")
        if subcommand == "fit":
            self._resumed_run = checkpoint.get("callbacks", {}).get(RunConfigCallback.__qualname__)
        class_path = config.model.class_path
        linked = getattr(import_class(class_path, trusted=None), "data_links", ())
        init_args = {key: value for key, value in config.model.init_args.items() if key not in linked}
        check_checkpoint_matches(config.ckpt_path, checkpoint, class_path, init_args, subcommand)

    def before_instantiate_classes(self) -> None:
        config = self._run_config()
        monitor, mode = import_class(config.model.class_path, trusted=None).monitor
        for spec in config.trainer.callbacks or []:
            follow_monitor(spec, monitor, mode)
        fitting = self.subcommand == "fit"
        every_n_steps = (config.get("last_every_n_steps") or 0) if fitting else 0
        run = apply_run_policy(config.trainer, self.run_name, every_n_steps)
        if fitting and self._resumed_run:
            log_into_resumed_run(config.trainer, self._resumed_run, checkpoint_run_folder(config.ckpt_path))
        claim_run_folder(config.trainer)  # after the resume: a resumed run keeps its own folder
        if self.save_config_callback is RunConfigCallback:
            self.save_config_kwargs = {**run, "resuming": self._resuming(), **self.save_config_kwargs}

    def _resuming(self) -> bool:
        return self.subcommand == "fit" and self._run_config().get("ckpt_path") is not None

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if not any(isinstance(callback, FastPath) for callback in trainer.callbacks):
            warn_if_slow_bf16(trainer)  # FastPath checks it itself
        # A fixed TensorBoard/CSV version names a folder before the run starts: refuse a taken one now, since a
        # failing run's loggers would still write into it.
        logger = trainer.logger
        if isinstance(logger, (TensorBoardLogger, CSVLogger)) and isinstance(logger.version, (int, str)):
            for callback in trainer.callbacks:
                if isinstance(callback, RunConfigCallback):
                    callback.refuse_taken_folder(logger.log_dir, self._resuming())
        return trainer

    def after_fit(self) -> None:
        if not self._run_config().get("test_after_fit"):
            return
        checkpoint = self.trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_path", "") if checkpoint else ""
        if best:
            # The weights themselves rather than `ckpt_path`: with EMA/weight averaging the checkpoint's state_dict
            # holds the averaged model, which `ckpt_path` would replace by the raw one kept for resuming.
            self.model.load_state_dict(read_checkpoint(best)["state_dict"])
        self.trainer.test(self.model, datamodule=self.datamodule)


def _init_default(model_class: type, name: str) -> Any:
    """The default of init argument ``name``, from the first class of the MRO whose ``__init__`` declares it (``None``
    when none does, or it has no default)."""
    for cls in model_class.__mro__:
        parameter = inspect.signature(cls.__init__).parameters.get(name) if "__init__" in vars(cls) else None
        if parameter is not None:
            return None if parameter.default is inspect.Parameter.empty else parameter.default
    return None


def _parser_kwargs(*config_files: str) -> dict[str, dict[str, list[str]]]:
    return {subcommand: {"default_config_files": list(config_files)} for subcommand in SUBCOMMANDS}


#: Errors that end a run from the command line with ``error: <message>`` rather than a traceback: what they say is
#: all a user needs (a full disk, a run that diverged).
USER_ERRORS: tuple[type[BaseException], ...] = (CheckpointWriteError, NonFiniteError, MisconfigurationException)


def _cli(args: Sequence[str] | None, **kwargs: Any) -> ZooCLI:
    """ZooCLI on ``args``; from the command line (``args=None``) the errors of :data:`USER_ERRORS` exit with their
    message and status 1, from Python they raise."""
    if args is not None:
        return ZooCLI(args=list(args), **kwargs)
    try:
        return ZooCLI(args=None, **kwargs)
    except USER_ERRORS as error:
        raise SystemExit(f"error: {error}") from None


def run_recipe(recipe_file: str, args: Sequence[str] | None = None) -> ZooCLI:
    """Run ZooCLI with the shared defaults and the YAML beside ``recipe_file`` as default config files."""
    recipe_yaml = os.path.splitext(recipe_file)[0] + ".yaml"
    run_name = os.path.splitext(os.path.basename(recipe_file))[0]
    return _cli(args, parser_kwargs=_parser_kwargs(*DEFAULT_CONFIG_FILES, recipe_yaml), run_name=run_name)


# --- the `zoo` console command --------------------------------------------------------------------------------


def _model_argument(name: str) -> str:
    """``--model`` value for a preset name, a model class name or a class path."""
    if "." in name or name.startswith("{"):
        return name
    classes = {cls.__name__: cls for cls in _task_classes()}
    if name in classes:
        return f"{classes[name].__module__}.{name}"
    if zoo.is_model(name):
        info = zoo.model_info(name)
        # The sizes that come from the data are left to the datamodule (the model's `data_links`).
        init_args = {key: value for key, value in info.args.items() if key not in info.cls.data_links}
        return json.dumps({"class_path": info.class_path, "init_args": init_args})
    close = difflib.get_close_matches(name, [*zoo.list_models(), *classes], n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise SystemExit(f"error: unknown model {name!r}.{hint} `zoo list` shows every model.")


def _data_argument(name: str) -> str:
    if "." in name or name.startswith("{"):
        return name
    try:
        cls = get_datamodule_class(name)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    return f"{cls.__module__}.{cls.__name__}"


def expand_short_names(args: Sequence[str]) -> list[str]:
    """Replace ``--model <preset|Class>`` and ``--data <Name>`` by what LightningCLI parses."""
    resolvers = {"--model": _model_argument, "--data": _data_argument}
    out: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        key, eq, value = arg.partition("=")
        if key in resolvers and eq:
            out.append(f"{key}={resolvers[key](value)}")
        elif arg in resolvers and index + 1 < len(args):
            out += [arg, resolvers[arg](args[index + 1])]
            index += 1
        else:
            out.append(arg)
        index += 1
    return out
