"""Run policy: where a run's files go, which loggers and callbacks it keeps, how a resumed run finds its folder, and
the resolved config (with the code's git commit) sent to every logger.

Each run has one folder: the first logger's (``logs/<recipe>/version_N`` for TensorBoard and CSV, the W&B run's
``logs/<recipe>/<run id>``), ``logs/<recipe>/<run id>`` for a remote MLflow server, and a fresh
``logs/<recipe>/version_N`` when there is no logger. The config and the checkpoints are written there, and a run
never writes into the folder of another: a folder that already holds a config (a fixed ``version`` given twice) is
refused before anything is written, unless the run resumes from a checkpoint. A resumed run logs into the run
it resumes: the checkpoint names that run (:meth:`RunConfigCallback.state_dict`), and its config is written beside
the first one as ``config.resume-1.yaml``, ``config.resume-2.yaml``, ...

:func:`apply_run_policy` applies these rules to a parsed ``trainer`` config before anything is built; the CLI calls
it once. Classes are compared by what a ``class_path`` resolves to, so subclasses of Lightning's loggers and
progress bars follow the same rules.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from typing_extensions import override

from zoo.checkpoint import import_class

#: Root of the run folders of loggers that keep no local folder of their own (remote MLflow) and of runs without one.
DEFAULT_LOGS_ROOT = "logs"


def git_commit(path: str | os.PathLike[str] | None = None) -> str | None:
    """The commit checked out where ``path`` lies (the code's own folder by default), ``+dirty`` when tracked files
    differ from it; ``None`` outside a git work tree or without git."""
    folder = str(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", folder, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if status.strip() else "")


def next_version_dir(root: str | os.PathLike[str]) -> str:
    """``root/version_N``, claimed: ``N`` is one past the highest existing version (TensorBoard's numbering), and the
    folder is created here with ``os.mkdir``, which succeeds for one process only, so that two runs started at once
    never share a folder (the loser takes the next number)."""
    os.makedirs(root, exist_ok=True)
    versions = [int(m[1]) for p in Path(root).glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))]
    version = max(versions, default=-1) + 1
    while True:
        path = os.path.join(root, f"version_{version}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            version += 1


class RunConfigCallback(SaveConfigCallback):
    """Save the resolved LightningCLI config into the run's own folder and send it to every logger.

    ``config.yaml`` starts with the git commit of the code. MLflow receives it as the artifact ``config.yaml`` and
    the commit as the ``mlflow.source.git.commit`` tag; W&B receives it in the run config under ``cli``; every logger
    gets the commit as the hyperparameter ``git_commit``. Checkpoint callbacks without a ``dirpath`` write into
    ``<run folder>/checkpoints`` when the first logger keeps no local folder (remote MLflow) or there is none.

    Args:
        logs_root: Root of run folders for loggers without a local folder, and for runs without a logger.
        run_name: Folder name under ``logs_root`` (the recipe's name).
        resuming: The run continues a checkpoint (``fit --ckpt_path``), so its run folder is expected to exist.
        (others): as :class:`~lightning.pytorch.cli.SaveConfigCallback`; ``overwrite`` allows writing into a
            folder that already holds a config.
    """

    def __init__(
        self, *args, logs_root: str = DEFAULT_LOGS_ROOT, run_name: str = "zoo", resuming: bool = False, **kwargs
    ) -> None:
        kwargs["save_to_log_dir"] = False  # the folder is chosen here, not by trainer.log_dir (None for MLflow)
        super().__init__(*args, **kwargs)
        self.logs_root = logs_root
        self.run_name = run_name
        self.resuming = resuming
        self.run_dir: str | None = None

    def refuse_taken_folder(self, run_dir: str, resuming: bool) -> None:
        """Raise when ``run_dir`` already holds another run's config (called before anything is written)."""
        config_path = os.path.join(run_dir, self.config_filename)
        if os.path.isfile(config_path) and not (self.overwrite or resuming):
            raise RuntimeError(
                f"{config_path} already holds the config of an earlier run (a fixed logger `version` reuses its "
                "folder). Nothing was written: give another version, remove that folder, or resume that run with "
                "`--ckpt_path`."
            )

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        self._trainer = trainer
        run_dir = trainer.strategy.broadcast(self._run_dir(trainer) if trainer.is_global_zero else None)
        if trainer.is_global_zero:
            self.refuse_taken_folder(run_dir, resuming=self._resuming(trainer, stage))
        self.run_dir = run_dir
        if not trainer.loggers or trainer.loggers[0].save_dir is None:
            for checkpoint in trainer.checkpoint_callbacks:
                if isinstance(checkpoint, ModelCheckpoint) and checkpoint.dirpath is None:
                    checkpoint.dirpath = os.path.realpath(os.path.join(run_dir, "checkpoints"))
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    @override
    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Write ``config.yaml`` into the run folder and send it to the loggers (rank zero only)."""
        commit = git_commit()
        text = self.parser.dump(self.config, skip_none=False)
        os.makedirs(self.run_dir, exist_ok=True)
        header = f"# git commit: {commit}\n" if commit else ""
        path = Path(self.run_dir, self.config_filename)
        if self._resuming(trainer, stage):  # keep the first config; number the resumed runs' ones
            stem, suffix = os.path.splitext(self.config_filename)
            count = 1
            while path.exists():
                path, count = Path(self.run_dir, f"{stem}.resume-{count}{suffix}"), count + 1
        path.write_text(header + text)
        for logger in trainer.loggers:
            _send_config(logger, text, commit)

    def _resuming(self, trainer: L.Trainer, stage: str) -> bool:
        return stage == "fit" and (self.resuming or trainer.ckpt_path is not None)

    @override
    def state_dict(self) -> dict[str, Any]:
        """The run this checkpoint belongs to, so that resuming logs into it: folder, logger and version or id."""
        logger = self._trainer_logger
        state: dict[str, Any] = {"run_dir": self.run_dir, "logger": type(logger).__name__ if logger else None}
        if logger is not None:
            state["version"] = logger.version if isinstance(logger.version, (int, str)) else None
        return state

    @property
    def _trainer_logger(self) -> Logger | None:
        trainer = getattr(self, "_trainer", None)
        return trainer.loggers[0] if trainer is not None and trainer.loggers else None

    def _run_dir(self, trainer: L.Trainer) -> str:
        if not trainer.loggers:
            return next_version_dir(os.path.join(self.logs_root, self.run_name))
        logger = trainer.loggers[0]
        if isinstance(logger, (TensorBoardLogger, CSVLogger)):
            return logger.log_dir
        version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
        if logger.save_dir is None:  # a remote tracking server
            return os.path.join(self.logs_root, self.run_name, version)
        return os.path.join(logger.save_dir, str(logger.name), version)  # where Lightning puts its checkpoints


def _send_config(logger: Logger, text: str, commit: str | None) -> None:
    if commit:
        logger.log_hyperparams({"git_commit": commit})
    if isinstance(logger, MLFlowLogger):
        logger.experiment.log_text(logger.run_id, text, "config.yaml")
        if commit:
            logger.experiment.set_tag(logger.run_id, "mlflow.source.git.commit", commit)
    elif isinstance(logger, WandbLogger):
        logger.experiment.config.update({"cli": yaml.safe_load(text)}, allow_val_change=True)


# --- the policy on a parsed trainer config -----------------------------------------------------------------------
#: Callbacks that cannot run without a logger, left out of runs with ``--trainer.logger false``.
NEEDS_LOGGER: tuple[type, ...] = (LearningRateMonitor,)


def _class_of(spec: Any) -> type | None:
    """The class a ``class_path`` spec names (``None`` for a spec without one, or one that cannot be imported: the
    parser has already checked the paths it will instantiate)."""
    class_path = spec.get("class_path") if isinstance(spec, (dict, Namespace)) else None
    if not class_path:
        return None
    try:
        return import_class(class_path, trusted=None)
    except ValueError:
        return None


def _is(spec: Any, *classes: type) -> bool:
    cls = _class_of(spec)
    return cls is not None and issubclass(cls, classes)


def logger_specs(trainer: Namespace) -> list[Any]:
    """The trainer config's logger specs (``class_path``/``init_args``), in order."""
    specs = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
    return [spec for spec in specs if isinstance(spec, (dict, Namespace)) and spec.get("class_path")]


def apply_run_policy(trainer: Namespace, run_name: str, last_every_n_steps: int = 0) -> dict[str, Any]:
    """Apply the run rules to a parsed ``trainer`` config; returns the run folder's root and name for
    :class:`RunConfigCallback`.

    - ``enable_progress_bar: false`` wins over a progress bar among the default callbacks;
    - loggers get the program's name: the W&B project, the MLflow experiment (unless given), an absolute W&B folder;
    - without a logger, the callbacks that log through one are left out;
    - ``last_every_n_steps > 0`` adds a second writer of ``last.ckpt``, every that many optimizer steps.
    """
    callbacks = list(trainer.callbacks or [])
    if trainer.enable_progress_bar is False:
        callbacks = [spec for spec in callbacks if not _is(spec, ProgressBar)]
    specs = logger_specs(trainer)
    first = specs[0].init_args if specs else {}
    name = first.get("name") or run_name
    for spec in specs:
        args = spec.init_args
        if _is(spec, WandbLogger):
            if not args.get("project"):
                args.project = name  # Lightning puts W&B checkpoints under <save_dir>/<project>/<run id>
            # W&B's service process, started once per Python process, resolves relative folders against its own
            # working directory, which need not be the run's.
            args.save_dir = os.path.abspath(args.get("save_dir") or ".")
        if _is(spec, MLFlowLogger) and args.get("experiment_name") in (None, "lightning_logs"):
            args.experiment_name = name
    if trainer.logger is False or trainer.logger == []:
        kept = [spec for spec in callbacks if not _is(spec, *NEEDS_LOGGER)]
        if len(kept) < len(callbacks):
            rank_zero_info(f"No logger: left out {', '.join(c.__name__ for c in NEEDS_LOGGER)}, which log through one.")
        callbacks = kept
    trainer.callbacks = callbacks + _step_checkpoint(callbacks, last_every_n_steps)
    return {"logs_root": first.get("save_dir") or DEFAULT_LOGS_ROOT, "run_name": name}


def _step_checkpoint(callbacks: list[Any], every_n_steps: int) -> list[Namespace]:
    """A second writer of ``last.ckpt`` every ``every_n_steps`` optimizer steps (ModelCheckpoint takes either a step
    or an epoch interval, not both); none for 0."""
    if every_n_steps < 0:
        raise ValueError(f"--last_every_n_steps must be >= 0, got {every_n_steps}")
    if not every_n_steps:
        return []
    last = [spec for spec in callbacks if _is(spec, ModelCheckpoint) and _writes_last(spec)]
    if not last:
        raise ValueError("--last_every_n_steps needs the last.ckpt ModelCheckpoint (filename: last) of the defaults")
    step = Namespace(class_path=last[0].class_path, init_args=Namespace(**dict(last[0].init_args)))
    step.init_args.every_n_train_steps = every_n_steps
    step.init_args.every_n_epochs = None
    return [step]


def _writes_last(spec: Any) -> bool:
    args = spec.get("init_args") or {}
    return args.get("filename") == "last" and args.get("monitor") is None


def claim_run_folder(trainer: Namespace) -> None:
    """Give the first logger, when it numbers its folders itself (TensorBoard, CSV) and no version was given, the
    version of a folder claimed now (:func:`next_version_dir`). On ranks other than zero nothing is claimed: their
    loggers write nothing, and the callbacks take rank zero's folder."""
    specs = logger_specs(trainer)
    if not specs or not _is(specs[0], TensorBoardLogger, CSVLogger) or rank_zero_only.rank != 0:
        return
    args = specs[0].init_args
    if args.get("version") is not None:
        return
    root = os.path.join(args.get("save_dir") or ".", args.get("name") or "lightning_logs")
    args.version = int(os.path.basename(next_version_dir(root)).removeprefix("version_"))


def checkpoint_run_folder(ckpt_path: str | os.PathLike[str]) -> Path | None:
    """The run folder a checkpoint lies in (``<run folder>/checkpoints/<file>``, the folder holding the run's
    config), wherever it was moved; ``None`` for a checkpoint outside a run folder."""
    folder = Path(ckpt_path).resolve().parent
    if folder.name == "checkpoints" and any(folder.parent.glob("config*.yaml")):
        return folder.parent
    return None


def log_into_resumed_run(trainer: Namespace, run: dict[str, Any], run_folder: Path | None = None) -> None:
    """Point the first logger at the run a checkpoint came from (:meth:`RunConfigCallback.state_dict`), unless its
    version or id was given. A TensorBoard or CSV run resumes into ``run_folder``, the folder that holds the
    checkpoint now (moved, or seen from another working directory), else into the folder it was written in."""
    specs = logger_specs(trainer)
    if not specs or run.get("version") is None:
        return
    spec, version = specs[0], run["version"]
    cls = _class_of(spec)
    if cls is None or cls.__name__ != run.get("logger"):
        return
    args = spec.init_args
    if issubclass(cls, (TensorBoardLogger, CSVLogger)) and args.get("version") is None:
        folder = run_folder or Path(run["run_dir"] or "").resolve()
        if not folder.is_dir():
            return
        args.save_dir, args.name, args.version = str(folder.parent.parent), folder.parent.name, folder.name
        version = folder.name
    elif issubclass(cls, MLFlowLogger) and args.get("run_id") is None:
        args.run_id = version
    elif issubclass(cls, WandbLogger) and args.get("id") is None and args.get("version") is None:
        args.id = version
    else:
        return
    where = args.get("save_dir") and os.path.join(args.save_dir, str(args.get("name")), str(version))
    rank_zero_info(
        f"Resuming: logging into the checkpoint's run ({run['logger']} {version}, {where or run['run_dir']})."
    )
