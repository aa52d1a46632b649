"""LightningCLI for the zoo: the recipes' entry point and the ``zoo`` console command.

``ZooCLI`` links the datamodule's sizes into the model and can test right after fitting. With ``--ckpt_path``,
LightningCLI (2.6+) rebuilds the model from the hyperparameters saved in the checkpoint, so ``test``/``predict``
work whatever the current config says about the model.

``zoo`` adds short names on top: ``zoo fit --model cnn_bn --data MNIST`` (a registered preset and a datamodule
name), ``zoo fit --model CNN`` (any model class), and ``zoo list``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

import zoo
from callbacks import FastPath, checkpoint_filename
from callbacks.fast_path import warn_if_slow_bf16
from datamodules import DATAMODULES, SequenceDataModule, get_datamodule_class
from recipes.checkpoints import check_checkpoint_matches
from recipes.run_config import DEFAULT_LOGS_ROOT, RunConfigCallback
from zoo._checkpoint import read_checkpoint
from zoo._hparams import to_primitive
from zoo.tasks import TaskModule

RECIPES_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULTS_YAML = os.path.join(RECIPES_DIR, "defaults.yaml")
SUBCOMMANDS = ("fit", "validate", "test", "predict")
#: The metric of the default checkpoint and early-stopping callbacks (recipes/defaults.yaml).
DEFAULT_MONITOR = "val/acc"


#: Callbacks that cannot run without a logger, left out of runs with ``--trainer.logger false``.
NEEDS_LOGGER = ("LearningRateMonitor",)


class ZooCLI(LightningCLI):
    """LightningCLI over every :class:`~zoo.tasks.TaskModule` and any LightningDataModule.

    Args:
        run_name: Folder of this program's runs under ``logs/`` when the logger config names none (no logger, a
            remote MLflow server), and the W&B project / MLflow experiment unless given.
    """

    def __init__(self, *args: Any, run_name: str = "zoo", **kwargs: Any) -> None:
        self.run_name = run_name
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

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # Before LightningCLI replaces the model config by the checkpoint's hyperparameters: compare them first.
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        self._resumed_run: dict[str, Any] | None = None
        if config is not None and config.get("ckpt_path"):
            try:
                checkpoint = read_checkpoint(config.ckpt_path)
            except FileNotFoundError as error:
                raise FileNotFoundError(f"--ckpt_path {error}") from None
            if subcommand == "fit":
                self._resumed_run = checkpoint.get("callbacks", {}).get(RunConfigCallback.__qualname__)
            class_path = config.model.class_path
            linked = getattr(_import_class(class_path), "data_links", ())
            init_args = {key: value for key, value in config.model.init_args.items() if key not in linked}
            check_checkpoint_matches(config.ckpt_path, checkpoint, class_path, init_args, subcommand)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        # `--trainer.enable_progress_bar false` should win over the progress bar of a default config.
        if trainer.enable_progress_bar is False and trainer.callbacks:
            trainer.callbacks = [cb for cb in trainer.callbacks if "ProgressBar" not in cb.class_path.rsplit(".")[-1]]
        model_class = _import_class(config.model.class_path)
        _link_data_into_model(model_class, config.model, config.data)
        _follow_model_monitor(model_class, trainer.callbacks or [])
        self._configure_logging(trainer)
        if self.subcommand == "fit":
            _add_step_checkpoint(trainer, config.get("last_every_n_steps") or 0)
            if getattr(self, "_resumed_run", None):
                _log_into_resumed_run(trainer, self._resumed_run)

    def _configure_logging(self, trainer: Any) -> None:
        """Give the loggers this program's name and folder; without a logger, drop the callbacks that need one."""
        specs = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
        specs = [spec for spec in specs if hasattr(spec, "class_path")]
        first = specs[0].init_args if specs else {}
        run_name = first.get("name") or self.run_name
        logs_root = first.get("save_dir") or DEFAULT_LOGS_ROOT
        for spec in specs:
            kind, args = spec.class_path.rsplit(".", 1)[-1], spec.init_args
            if kind == "WandbLogger":
                if not args.get("project"):
                    args.project = run_name  # Lightning puts W&B checkpoints under <save_dir>/<project>/<run id>
                # W&B's service process, started once per Python process, resolves relative folders against its own
                # working directory, which need not be the run's.
                args.save_dir = os.path.abspath(args.get("save_dir") or ".")
            if kind == "MLFlowLogger" and args.get("experiment_name") in (None, "lightning_logs"):
                args.experiment_name = run_name
        if trainer.logger is False or trainer.logger == []:
            kept = [cb for cb in trainer.callbacks or [] if cb.class_path.rsplit(".", 1)[-1] not in NEEDS_LOGGER]
            if len(kept) < len(trainer.callbacks or []):
                rank_zero_info(f"No logger: left out {', '.join(NEEDS_LOGGER)}, which logs through one.")
                trainer.callbacks = kept
        if self.save_config_callback is RunConfigCallback:
            resuming = self.subcommand == "fit" and self.config[self.subcommand].get("ckpt_path") is not None
            self.save_config_kwargs = {
                "logs_root": logs_root,
                "run_name": run_name,
                "resuming": resuming,
                **self.save_config_kwargs,
            }

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if not any(isinstance(callback, FastPath) for callback in trainer.callbacks):
            warn_if_slow_bf16(trainer)  # FastPath checks it itself
        # A fixed TensorBoard/CSV version names a folder before the run starts: refuse a taken one now, since a
        # failing run's loggers would still write into it.
        logger = trainer.logger
        if isinstance(logger, (TensorBoardLogger, CSVLogger)) and isinstance(logger.version, (int, str)):
            resuming = self.subcommand == "fit" and self.config[self.subcommand].get("ckpt_path") is not None
            for callback in trainer.callbacks:
                if isinstance(callback, RunConfigCallback):
                    callback.refuse_taken_folder(logger.log_dir, resuming)
        return trainer

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit"):
            return
        checkpoint = self.trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_path", "") if checkpoint else ""
        if best:
            # The weights themselves rather than `ckpt_path`: with EMA/weight averaging the checkpoint's state_dict
            # holds the averaged model, which `ckpt_path` would replace by the raw one kept for resuming.
            state = torch.load(best, map_location=self.model.device, weights_only=True)["state_dict"]
            self.model.load_state_dict(state)
        self.trainer.test(self.model, datamodule=self.datamodule)


def _add_step_checkpoint(trainer: Any, every_n_steps: int) -> None:
    """Add a second writer of ``last.ckpt``, every ``every_n_steps`` optimizer steps (ModelCheckpoint takes either
    a step or an epoch interval, not both)."""
    if every_n_steps < 0:
        raise ValueError(f"--last_every_n_steps must be >= 0, got {every_n_steps}")
    if not every_n_steps:
        return
    last = [cb for cb in trainer.callbacks or [] if cb.class_path.endswith("ModelCheckpoint") and _is_last(cb)]
    if not last:
        raise ValueError("--last_every_n_steps needs the last.ckpt ModelCheckpoint (filename: last) of the defaults")
    step = Namespace(class_path=last[0].class_path, init_args=Namespace(**dict(last[0].init_args)))
    step.init_args.every_n_train_steps = every_n_steps
    step.init_args.every_n_epochs = None
    trainer.callbacks = [*trainer.callbacks, step]


def _is_last(callback: Any) -> bool:
    args = callback.get("init_args") or {}
    return args.get("filename") == "last" and args.get("monitor") is None


def _log_into_resumed_run(trainer: Any, run: dict[str, Any]) -> None:
    """Point the first logger at the run a checkpoint came from, unless its version or id was given."""
    specs = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
    spec = specs[0] if specs and hasattr(specs[0], "class_path") else None
    if spec is None or run.get("version") is None or spec.class_path.rsplit(".", 1)[-1] != run.get("logger"):
        return
    args, version = spec.init_args, run["version"]
    if run["logger"] in ("TensorBoardLogger", "CSVLogger") and args.get("version") is None:
        folder = version if isinstance(version, str) else f"version_{version}"
        root = os.path.join(args.get("save_dir") or ".", args.get("name") or "lightning_logs")
        if os.path.realpath(os.path.join(root, folder)) == os.path.realpath(run["run_dir"] or ""):
            args.version = version
    elif run["logger"] == "MLFlowLogger" and args.get("run_id") is None:
        args.run_id = version
    elif run["logger"] == "WandbLogger" and args.get("id") is None and args.get("version") is None:
        args.id = version
    else:
        return
    rank_zero_info(f"Resuming: logging into the checkpoint's run ({run['logger']} {version}, {run['run_dir']}).")


def _import_class(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _link_data_into_model(model_class: type, model: Any, data: Any) -> None:
    """Set the model's ``data_links`` arguments from the datamodule's attributes of the same names.

    Only the arguments the chosen model's task declares and takes are linked, so its hyperparameters (and every
    checkpoint) hold nothing it cannot be rebuilt with. The datamodule is built once here to read values that
    come from its files (an image folder's class count); building one reads no data.
    """
    links = [key for key in getattr(model_class, "data_links", ()) if key in model.init_args]
    if not links:
        return
    datamodule = _import_class(data.class_path)(**data.init_args.as_dict())
    for key in links:
        value = getattr(datamodule, key, None)
        if value is None:
            continue
        given = to_primitive(model.init_args[key], key)
        if given not in (to_primitive(_init_default(model_class, key), key), to_primitive(value, key)):
            raise ValueError(
                f"--model.init_args.{key}={given!r} disagrees with the data: {type(datamodule).__name__} has "
                f"{key}={value!r}. Leave {key} out; it is set from the data."
            )
        model.init_args[key] = value


def _init_default(model_class: type, name: str) -> Any:
    """The default of init argument ``name``, from the first class of the MRO whose ``__init__`` declares it (``None``
    when none does, or it has no default)."""
    for cls in model_class.__mro__:
        parameter = inspect.signature(cls.__init__).parameters.get(name) if "__init__" in vars(cls) else None
        if parameter is not None:
            return None if parameter.default is inspect.Parameter.empty else parameter.default
    return None


def _follow_model_monitor(model_class: type, callbacks: list[Any]) -> None:
    """Point the default checkpoint and early-stopping callbacks at the model task's metric (``val/psnr``, ...)."""
    monitor, mode = model_class.monitor
    if monitor == DEFAULT_MONITOR:
        return
    for callback in callbacks:
        args = callback.get("init_args")
        kind = callback.class_path.rsplit(".")[-1]
        if args is None:  # a callback given without arguments
            continue
        if kind in ("ModelCheckpoint", "EarlyStopping") and args.monitor == DEFAULT_MONITOR:
            args.monitor, args.mode = monitor, mode
            if getattr(args, "filename", None) == checkpoint_filename(DEFAULT_MONITOR):
                args.filename = checkpoint_filename(monitor)


def run_recipe(recipe_file: str, args: Sequence[str] | None = None) -> ZooCLI:
    """Run ZooCLI with the shared defaults and the YAML beside ``recipe_file`` as default config files."""
    recipe_yaml = os.path.splitext(recipe_file)[0] + ".yaml"
    config_files = {"default_config_files": [DEFAULTS_YAML, recipe_yaml]}
    parser_kwargs = {subcommand: config_files for subcommand in SUBCOMMANDS}
    run_name = os.path.splitext(os.path.basename(recipe_file))[0]
    return ZooCLI(args=list(args) if args is not None else None, parser_kwargs=parser_kwargs, run_name=run_name)


# --- the `zoo` console command --------------------------------------------------------------------------------


def _model_classes() -> dict[str, type]:
    found, stack = {}, [TaskModule]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        found[cls.__name__] = cls
    return found


def _model_argument(name: str) -> str:
    """``--model`` value for a preset name, a model class name or a class path."""
    if "." in name or name.startswith("{"):
        return name
    classes = _model_classes()
    if name in classes:
        return f"{classes[name].__module__}.{name}"
    if zoo.is_model(name):
        config = zoo.preset_config(name)  # the preset's class and arguments; nothing is built
        links = _import_class(config["class_path"]).data_links
        config["init_args"] = {key: value for key, value in config["init_args"].items() if key not in links}
        return json.dumps(config)
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
        cls = info.fn.__annotations__.get("return", "")
        models.add_row(name, str(cls), info.task, info.input_spec.describe(), params, info.source)
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


#: ``zoo <tool>``: programs beside LightningCLI's subcommands, each a module with ``main(args)``. ``zoo predict`` is the
#: file/text predictor when given ``--inputs`` or ``--text``, else LightningCLI's ``predict`` over a datamodule.
TOOLS = {
    "export": "recipes.export",
    "predict": "recipes.predict",
    "serve": "recipes.serve",
    "explain": "recipes.explain",
    "sample": "recipes.sample",
}


def _tool(args: Sequence[str]) -> str | None:
    """The module of the tool ``args`` ask for, or None for LightningCLI."""
    name = args[0] if args else None
    if name == "predict" and not any(arg.split("=")[0] in ("--inputs", "--text") for arg in args):
        return None
    return TOOLS.get(name) if name else None


def main(args: Sequence[str] | None = None) -> Any:
    """The ``zoo`` command: ``zoo list``, the tools of :data:`TOOLS`, or LightningCLI subcommands with short
    model/data names."""
    args = list(sys.argv[1:] if args is None else args)
    if args[:1] == ["list"]:
        print_registry()
        return None
    tool = _tool(args)
    if tool is not None:
        return importlib.import_module(tool).main(args[1:])
    if not args:
        rank_zero_info(
            "usage: zoo {list,fit,validate,test,predict,export,serve,explain,sample} [--model NAME] [--data NAME] ..."
        )
    parser_kwargs = {subcommand: {"default_config_files": [DEFAULTS_YAML]} for subcommand in SUBCOMMANDS}
    return ZooCLI(args=expand_short_names(args), parser_kwargs=parser_kwargs)


def console() -> None:
    """The ``zoo`` console script: :func:`main`, whose return value must not become the exit status."""
    main()


if __name__ == "__main__":
    console()
