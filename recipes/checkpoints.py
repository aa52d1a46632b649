"""Checkpoints given on the command line: read safely, and compared with the run's own config before anything runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from zoo.checkpoint import TRUSTED_MODULES, import_class, to_primitive


def check_checkpoint_matches(
    path: str, checkpoint: Mapping[str, Any], class_path: str, init_args: Mapping[str, Any], subcommand: str
) -> None:
    """Refuse a checkpoint of another model class, and warn about each argument whose value differs from it.

    Raises:
        ValueError: naming both classes, when the checkpoint was written by a model of another class.
    """
    saved = checkpoint.get("hyper_parameters") or {}
    saved_class = saved.get("_class_path")
    if saved_class:
        # The zoo and the module of the run's own model (given by the user) are trusted; nothing else is imported.
        trusted = (*TRUSTED_MODULES, class_path.rpartition(".")[0])
        try:
            saved_cls = import_class(saved_class, trusted, str(path))
        except ValueError as error:
            raise ValueError(f"{error} Give `--model {saved_class}` if you trust that module.") from None
    if saved_class and saved_cls is not import_class(class_path, trusted=None):
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
