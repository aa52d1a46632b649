"""Training on the real datasets in ../shared/data (skipped when absent; selected with `-m slow`)."""

from __future__ import annotations

import pytest

from recipes import mnist_cnn

pytestmark = pytest.mark.slow


def test_mnist_cnn_recipe_reaches_97_percent_in_one_epoch(shared_data):
    """The recipe as shipped, one epoch on the real MNIST files (flat folder of the four IDX .gz files)."""
    cli = mnist_cnn.main(
        [
            "fit",
            f"--data.data_dir={shared_data / 'mnist'}",
            "--trainer.max_epochs=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ]
    )
    accuracy = float(cli.trainer.callback_metrics["test/acc"])
    print(f"mnist_cnn, 1 epoch: test/acc = {accuracy:.4f}")
    assert accuracy >= 0.97
