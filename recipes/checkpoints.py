"""Checkpoints given on the command line: read safely, and compared with the run's own config before anything runs."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from zoo._hparams import to_primitive


def _trusted(saved_class: str, class_path: str) -> bool:
    """A checkpoint's class is imported only from the zoo or from the module of the run's own model."""
    module = saved_class.rpartition(".")[0]
    return module == "zoo" or module.startswith("zoo.") or module == class_path.rpartition(".")[0]


def _resolve(class_path: str) -> Any:
    """The class a path names (``zoo.MLP`` and ``zoo.mlp.MLP`` are one), or the path when it cannot be imported."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return class_path


def check_checkpoint_matches(
    path: str, checkpoint: Mapping[str, Any], class_path: str, init_args: Mapping[str, Any], subcommand: str
) -> None:
    """Refuse a checkpoint of another model class, and warn about each argument whose value differs from it.

    Raises:
        ValueError: naming both classes, when the checkpoint was written by a model of another class.
    """
    saved = checkpoint.get("hyper_parameters") or {}
    saved_class = saved.get("_class_path")
    if saved_class and not _trusted(saved_class, class_path):
        # Checked before anything is imported: importing a module runs its code.
        raise ValueError(
            f"{path} names the model class {saved_class}, which is neither part of the zoo nor this run's model "
            f"({class_path}); it is not imported. Give `--model {saved_class}` if you trust that module."
        )
    if saved_class and _resolve(saved_class) is not _resolve(class_path):
        raise ValueError(
            f"{path} is a checkpoint of {saved_class}, but this run's model is {class_path}. "
            f"Give `--model {saved_class}` to use that checkpoint, or a checkpoint of {class_path}."
        )
    differences = []
    for key, value in init_args.items():
        if key.startswith("_") or key not in saved:
            continue
        try:
            given = to_primitive(value, key)
        except TypeError:
            continue
        if given != saved[key]:
            differences.append(f"{key}: {given!r} given, {saved[key]!r} in the checkpoint")
    if differences:
        effect = (
            "Resuming restores the weights, optimizer and schedule state as saved, so the optimizer keeps the "
            "checkpoint's learning rate; start a new run (a checkpoint's weights through `--model.init_args` or "
            "fine-tuning) to train with other values."
            if subcommand == "fit"
            else "The model is rebuilt with the checkpoint's values."
        )
        rank_zero_warn(f"The run's model arguments differ from {path}: {'; '.join(differences)}. {effect}")
