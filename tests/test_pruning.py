"""Pruning from a config file: recipes/prune.yaml and recipes/prune_structured.yaml on real recipes, and the
ScheduledPruning callback they use."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import QUIET
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

import zoo
from callbacks import NonFiniteGuard
from callbacks.pruning import ScheduledPruning
from datamodules import DigitsDataModule
from recipes import digits_cnn, mnist_cnn

RECIPES = Path(digits_cnn.__file__).parent


def _weights(state_dict: dict[str, torch.Tensor], ndim: tuple[int, ...]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in state_dict.items() if key.endswith(".weight") and value.ndim in ndim}


def _sparsity(weights: dict[str, torch.Tensor]) -> float:
    return sum(int((w == 0).sum()) for w in weights.values()) / sum(w.numel() for w in weights.values())


def _test_accuracy(model: zoo.ImageClassifier) -> float:
    data = DigitsDataModule()
    data.setup("test")
    correct = total = 0
    with torch.no_grad():
        for x, y in data.test_dataloader():
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += len(y)
    return correct / total


def _checkpoints(cli) -> dict[str, dict]:
    folder = Path(cli.trainer.logger.log_dir) / "checkpoints"
    return {path.name: torch.load(path, map_location="cpu", weights_only=True) for path in folder.glob("*.ckpt")}


@pytest.mark.slow
def test_unstructured_config_prunes_the_digits_recipe():
    """Global L1 to 50/70/80% at epochs 1-3 of 5: every checkpoint holds plain weights at its epoch's sparsity, the
    final model is 80% zeros, still classifies, and loads with zoo.load_from_checkpoint."""
    cli = digits_cnn.main(["fit", "-c", str(RECIPES / "prune.yaml"), "--trainer.max_epochs=5", *QUIET])
    callbacks = cli.trainer.callbacks
    pruning = next(cb for cb in callbacks if isinstance(cb, ScheduledPruning))
    # appended to the defaults, which stay
    assert {EarlyStopping, NonFiniteGuard} <= {type(cb) for cb in callbacks}
    assert sum(isinstance(cb, ModelCheckpoint) for cb in callbacks) == 2
    assert pruning.schedule == {1: 0.5, 2: 0.7, 3: 0.8}
    checkpoints = _checkpoints(cli)
    assert "last.ckpt" in checkpoints and len(checkpoints) == 2
    for name, checkpoint in checkpoints.items():
        state = checkpoint["state_dict"]
        assert not [key for key in state if key.endswith(("_orig", "_mask"))], name
        pruned = _weights(state, ndim=(2, 4))  # conv and linear weights
        assert _sparsity(pruned) == pytest.approx(pruning.target(checkpoint["epoch"]), abs=1e-4), name
        assert _sparsity(_weights(state, ndim=(1,))) == 0  # BatchNorm weights are left alone
    model = zoo.load_from_checkpoint(Path(cli.trainer.logger.log_dir) / "checkpoints" / "last.ckpt")
    assert _sparsity(_weights(model.state_dict(), ndim=(2, 4))) == pytest.approx(0.8, abs=1e-4)
    assert _test_accuracy(model) > 0.9  # dense: 0.97-0.98 after 5 epochs


@pytest.mark.slow
def test_structured_config_removes_conv_channels():
    """30% of every conv's output channels become all-zero; linear layers keep every unit; accuracy holds."""
    cli = digits_cnn.main(["fit", "-c", str(RECIPES / "prune_structured.yaml"), "--trainer.max_epochs=4", *QUIET])
    state = _checkpoints(cli)["last.ckpt"]["state_dict"]
    convs = _weights(state, ndim=(4,))
    assert len(convs) == 4
    for key, weight in convs.items():
        dead = int((weight.flatten(1).abs().sum(dim=1) == 0).sum())
        assert abs(dead / weight.shape[0] - 0.3) <= 1 / weight.shape[0], (key, dead)  # up to one channel of rounding
    assert _sparsity(_weights(state, ndim=(2,))) == 0
    model = zoo.load_from_checkpoint(Path(cli.trainer.logger.log_dir) / "checkpoints" / "last.ckpt")
    assert _test_accuracy(model) > 0.85


def test_prune_config_runs_with_another_recipe(mnist_dir):
    """The same file on the MNIST recipe (a model without BatchNorm), for one quick epoch: a warning says the schedule
    is never reached."""
    with pytest.warns(UserWarning, match="final sparsity 0.8 is never reached"):
        cli = mnist_cnn.main(
            [
                "fit",
                "-c",
                str(RECIPES / "prune.yaml"),
                "--trainer.fast_dev_run=2",
                f"--data.data_dir={mnist_dir}",
                *QUIET,
            ]
        )
    pruning = next(cb for cb in cli.trainer.callbacks if isinstance(cb, ScheduledPruning))
    assert {type(module).__name__ for module, _ in pruning._parameters_to_prune} == {"Conv2d", "Linear"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sparsity": {}}, "at least one"),
        ({"sparsity": {1: 1.0}}, r"fractions in \[0, 1\)"),
        ({"sparsity": {-1: 0.5}}, "epochs >= 0"),
        ({"sparsity": {1: 0.8, 2: 0.5}}, "must not decrease"),
        ({"sparsity": {1: 0.5}, "layer_types": ["Conv9d"]}, "not a torch.nn module class"),
    ],
)
def test_bad_schedules_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ScheduledPruning(**kwargs)


def test_schedule_is_a_step_function():
    pruning = ScheduledPruning({2: 0.5, 4: 0.9})
    assert [pruning.target(epoch) for epoch in range(6)] == [0.0, 0.0, 0.5, 0.5, 0.9, 0.9]
