"""Image-logging callbacks on a tiny CNN, read back from the TensorBoard event file, plus the logger dispatch."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import Mock

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks import ConfusionMatrixLogger, FeatureMapLogger, LRScheduleLogger, PredictionGridLogger, log_image
from callbacks._utils import to_image_array

CLASSES = 3


class TinyCNN(L.LightningModule):
    """conv1 -> ReLU -> conv2 -> ReLU -> global average pool -> head, on (1, 8, 8) images, LR x0.9 per step."""

    def __init__(self, return_preds: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1)
        self.head = nn.Linear(6, CLASSES)
        self.return_preds = return_preds

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.head(h.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.return_preds:
            raise AssertionError("the callback must take the predictions from validation_step")
        return self.logits(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.logits(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.logits(x)
        self.log("val/loss", F.cross_entropy(logits, y))
        return {"preds": logits, "target": y} if self.return_preds else None

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.5)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.9**step)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def loaders() -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, CLASSES, (48,), generator=g)
    # Class-dependent brightness so the model learns something and the matrix is not degenerate.
    x = torch.randn(48, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float()
    train, val = TensorDataset(x[:32], y[:32]), TensorDataset(x[32:], y[32:])
    return DataLoader(train, batch_size=8), DataLoader(val, batch_size=8)


def trainer_with(tmp_path: Path, callbacks: list[L.Callback], epochs: int = 2) -> tuple[L.Trainer, TensorBoardLogger]:
    logger = TensorBoardLogger(tmp_path)
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        logger=logger,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    return trainer, logger


def read_images(log_dir: str) -> EventAccumulator:
    events = EventAccumulator(log_dir, size_guidance={"images": 0})
    events.Reload()
    return events


def hand_confusion(model: TinyCNN, val: DataLoader) -> torch.Tensor:
    matrix = torch.zeros(CLASSES, CLASSES, dtype=torch.long)
    with torch.no_grad():
        for x, y in val:
            for t, p in zip(y, model.logits(x).argmax(1), strict=True):
                matrix[t, p] += 1
    return matrix


def test_all_image_callbacks_reach_tensorboard(tmp_path: Path) -> None:
    train, val = loaders()
    confusion, grid = ConfusionMatrixLogger(CLASSES), PredictionGridLogger(num_samples=6, every_n_epochs=2)
    fmaps, lr = FeatureMapLogger(max_channels=4), LRScheduleLogger()
    model = TinyCNN()
    trainer, logger = trainer_with(tmp_path, [confusion, grid, fmaps, lr])
    trainer.fit(model, train, val)
    model.eval()

    events = read_images(logger.log_dir)
    tags = set(events.Tags()["images"])
    assert {"val/confusion_matrix", "val/predictions", "features/conv1", "features/conv2", "lr/schedule"} <= tags
    assert [e.step for e in events.Images("val/confusion_matrix")] == [4, 8]  # after each epoch's 4 steps
    assert [e.step for e in events.Images("val/predictions")] == [8]  # every_n_epochs=2
    assert len(events.Images("lr/schedule")) == 1  # once, at the end of fit

    # Numbers behind the images, recomputed from the final model (the last validation ran with these weights).
    assert torch.equal(confusion.last_matrix, hand_confusion(model, val))
    x_val, y_val = next(iter(val))
    assert torch.equal(grid.samples[1], y_val[:6])
    assert torch.equal(grid.last_predictions, model.logits(x_val[:6]).argmax(1))
    with torch.no_grad():
        c1 = model.conv1(x_val[:1])
        c2 = model.conv2(F.relu(c1))
    torch.testing.assert_close(fmaps.last_feature_maps["conv1"], c1[0])
    torch.testing.assert_close(fmaps.last_feature_maps["conv2"], c2[0])
    assert not any(m._forward_hooks for m in model.modules())

    # The feature-map image decoded from the event file is the grid of those maps.
    png = events.Images("features/conv2")[-1].encoded_image_string
    decoded = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    np.testing.assert_array_equal(decoded, to_image_array(fmaps._grid(c2[0])))

    steps, lrs = zip(*lr.history["SGD"], strict=True)
    assert list(steps) == list(range(8))
    assert lrs == pytest.approx([0.5 * 0.9**s for s in steps])
    assert LRScheduleLogger().load_state_dict(lr.state_dict()) is None


def test_confusion_matrix_from_validation_step_outputs(tmp_path: Path) -> None:
    train, val = loaders()
    confusion = ConfusionMatrixLogger(CLASSES, normalize="true")
    model = TinyCNN(return_preds=True)  # forward() raises: predictions must come from validation_step
    trainer, logger = trainer_with(tmp_path, [confusion], epochs=1)
    trainer.fit(model, train, val)

    counts = hand_confusion(model.eval(), val).double()
    expected = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    torch.testing.assert_close(confusion.last_matrix.double(), expected)
    assert "val/confusion_matrix" in read_images(logger.log_dir).Tags()["images"]


def test_log_image_dispatches_by_logger_type(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    wandb, mlflow = Mock(spec=WandbLogger), Mock(spec=MLFlowLogger)
    mlflow.run_id = "run-123"
    tensorboard = TensorBoardLogger(tmp_path)
    trainer = SimpleNamespace(loggers=[CSVLogger(tmp_path), wandb, mlflow, tensorboard])

    fig = Figure(figsize=(2, 1), dpi=50)
    fig.add_subplot().plot([0, 1], [1, 0])
    assert log_image(trainer, "val/plot", fig, step=7) == 3

    wandb.log_image.assert_called_once()
    kwargs = wandb.log_image.call_args.kwargs
    assert kwargs["key"] == "val/plot" and kwargs["step"] == 7 and kwargs["images"][0].shape == (50, 100, 3)
    args, kwargs = mlflow.experiment.log_image.call_args
    assert args[0] == "run-123" and args[1].shape == (50, 100, 3)
    assert kwargs["artifact_file"] == "val/plot/step_0000007.png"
    tensorboard.experiment.flush()
    assert [e.step for e in read_images(tensorboard.log_dir).Images("val/plot")] == [7]

    assert log_image(SimpleNamespace(loggers=[CSVLogger(tmp_path)]), "x", torch.zeros(3, 4, 4), step=0) == 0


def test_to_image_array_layouts() -> None:
    chw = torch.zeros(3, 4, 5)
    chw[0] = 1.0
    out = to_image_array(chw)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and (out[..., 0] == 255).all() and (out[..., 1] == 0).all()
    assert to_image_array(torch.full((4, 5), 0.5)).shape == (4, 5, 3)
    assert to_image_array(np.zeros((4, 5, 3), dtype=np.uint8)).shape == (4, 5, 3)
    with pytest.raises(ValueError):
        to_image_array(torch.zeros(2, 3, 4, 5))


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (ConfusionMatrixLogger, {"num_classes": 1}),
        (ConfusionMatrixLogger, {"num_classes": 3, "normalize": "rows"}),
        (ConfusionMatrixLogger, {"num_classes": 3, "class_names": ["a", "b"]}),
        (PredictionGridLogger, {"num_samples": 0}),
        (FeatureMapLogger, {"layer_names": []}),
        (FeatureMapLogger, {"layer_names": "conv1"}),
        (FeatureMapLogger, {"max_channels": 0}),
        (LRScheduleLogger, {"tag": ""}),
    ],
)
def test_invalid_arguments_raise(cls: type, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        cls(**kwargs)


def test_feature_map_logger_rejects_unknown_layers(tmp_path: Path) -> None:
    train, val = loaders()
    trainer, _ = trainer_with(tmp_path, [FeatureMapLogger(layer_names=["conv1", "head"])], epochs=1)
    with pytest.raises(ValueError, match="no Conv2d named \\['head'\\]"):
        trainer.fit(TinyCNN(), train, val)


def test_log_image_reaches_real_mlflow_and_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs only where the optional ``mlflow``/``wandb`` extras are installed; both stay on local files."""
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 refuses a plain folder otherwise
    monkeypatch.setenv("WANDB_SILENT", "true")
    mlflow = MLFlowLogger(experiment_name="callbacks", tracking_uri=f"file:{tmp_path / 'mlruns'}")
    wandb = WandbLogger(offline=True, save_dir=tmp_path, project="callbacks")
    trainer = SimpleNamespace(loggers=[mlflow, wandb])

    assert log_image(trainer, "features/conv1", torch.rand(1, 8, 8), step=4) == 2
    wandb.experiment.finish()
    assert list((tmp_path / "mlruns").rglob("artifacts/features/conv1/step_0000004.png"))
    assert list((tmp_path / "wandb").rglob("media/images/features/conv1_*.png"))
