"""Where a run's files go, and the resolved config (with the code's git commit) sent to every logger.

Each run has one folder: the first logger's (``logs/<recipe>/version_N`` for TensorBoard and CSV, the W&B run's
``logs/<recipe>/<run id>``), ``logs/<recipe>/<run id>`` for a remote MLflow server, and a fresh
``logs/<recipe>/version_N`` when there is no logger. The config and the checkpoints are written there, and a run
never writes into the folder of another: a folder that already holds a config (a fixed ``version`` given twice) is
refused before anything is written, unless the run resumes from a checkpoint. A resumed run logs into the run
it resumes: the checkpoint names that run (:meth:`RunConfigCallback.state_dict`), and its config is written beside
the first one as ``config.resume-1.yaml``, ``config.resume-2.yaml``, ...
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from typing_extensions import override

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
    """``root/version_N`` with ``N`` one past the highest existing version (TensorBoard's numbering)."""
    versions = [int(m[1]) for p in Path(root).glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return os.path.join(root, f"version_{max(versions, default=-1) + 1}")


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
