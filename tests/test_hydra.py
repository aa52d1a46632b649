"""Models and datamodules built by Hydra from YAML: hyperparameters stored as primitives, checkpoints that resume and
load with ``weights_only=True``."""

from __future__ import annotations

import enum
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from conftest import quiet_trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.core.saving import save_hparams_to_yaml
from torch import nn

import zoo
from datamodules import DigitsDataModule
from zoo.checkpoint import to_primitive

pytest.importorskip("hydra")
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

CONFIG = """
model:
  _target_: zoo.CNN
  num_classes: 10
  in_channels: 1
  img_size: [8, 8]
  channels: [8, 16]
  blocks_per_stage: 1
  lr: 0.01
data:
  _target_: datamodules.DigitsDataModule
  batch_size: 16
  num_workers: 0
"""


def _trainer(tmp_path: Path, max_epochs: int, **kwargs) -> L.Trainer:
    defaults = dict(limit_train_batches=3, limit_val_batches=2, enable_checkpointing=True)
    return quiet_trainer(max_epochs=max_epochs, default_root_dir=tmp_path, **defaults | kwargs)


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")  # the resume writes there too
def test_hydra_built_model_trains_resumes_and_loads_weights_only(tmp_path):
    cfg = OmegaConf.create(yaml.safe_load(CONFIG))
    model, datamodule = instantiate(cfg.model), instantiate(cfg.data)
    assert isinstance(model, zoo.CNN) and isinstance(datamodule, DigitsDataModule)
    assert type(model.hparams["channels"]) is list and model.hparams["channels"] == [8, 16]
    assert type(model.hparams_initial["img_size"]) is list

    checkpoint_dir = tmp_path / "ckpt"
    trainer = _trainer(tmp_path, 1, callbacks=[ModelCheckpoint(dirpath=checkpoint_dir, save_last=True)])
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 3
    last = checkpoint_dir / "last.ckpt"

    resumed = _trainer(tmp_path, 2, callbacks=[ModelCheckpoint(dirpath=checkpoint_dir, save_last=True)])
    resumed.fit(model, datamodule=datamodule, ckpt_path=last)
    assert resumed.current_epoch == 2 and resumed.global_step == 6

    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 6
    assert type(checkpoint["hyper_parameters"]["channels"]) is list
    assert checkpoint["datamodule_hyper_parameters"]["batch_size"] == 16
    restored = zoo.CNN.load_from_checkpoint(last, weights_only=True)
    assert restored.hparams == model.hparams
    x = torch.randn(4, 1, 8, 8)
    model.eval(), restored.eval()
    torch.testing.assert_close(restored(x), model(x))


class _ConfigDigits(DigitsDataModule):
    """A datamodule as other projects write it: its hyperparameters are its config, defaults merged with ``cfg``."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(**cfg)
        self.save_hyperparameters(OmegaConf.merge(dict(self.hparams), cfg), logger=False)


def test_checkpoint_converts_omegaconf_datamodule_hyperparameters(tmp_path):
    cfg = OmegaConf.create({"batch_size": 16, "num_workers": 0, "augment": "none"})
    datamodule = _ConfigDigits(cfg)
    assert isinstance(datamodule.hparams, DictConfig)
    model = zoo.CNN(num_classes=10, in_channels=1, img_size=8, channels=(8,))
    trainer = _trainer(tmp_path, 1, max_steps=1, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(model, datamodule=datamodule)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=True)
    hparams = checkpoint["datamodule_hyper_parameters"]  # the init arguments (cfg too) merged with cfg
    assert type(hparams) is dict and hparams["cfg"] == {"batch_size": 16, "num_workers": 0, "augment": "none"}
    assert hparams["batch_size"] == 16 and hparams["test_fraction"] == 0.2
    assert "datamodule_hparams_type" not in checkpoint


def test_preset_hparams_yaml_loads_with_safe_load(tmp_path):
    model = zoo.create_model("cnn_bn")  # the preset passes tuples
    # Loggers write hparams_initial; without omegaconf installed, with yaml.dump, which tags tuples !!python/tuple.
    save_hparams_to_yaml(tmp_path / "hparams.yaml", model.hparams_initial, use_omegaconf=False)
    assert yaml.safe_load((tmp_path / "hparams.yaml").read_text()) == dict(model.hparams)


class _Color(enum.Enum):
    RED = "red"


@pytest.mark.filterwarnings("ignore:Attribute 'act' is an instance of `nn.Module`")
def test_to_primitive():
    nested = OmegaConf.create({"widths": [8, 16], "opt": {"betas": [0.9, 0.99], "name": "${..name}"}, "name": "adam"})
    assert isinstance(nested.widths, ListConfig)
    value = {
        "cfg": nested,
        "list": ListConfig([1, {"a": 2}]),
        "np": [np.int64(3), np.float32(0.5), np.bool_(True)],
        "array": np.arange(4).reshape(2, 2),
        "tensor": torch.tensor([1.5, 2.5]),
        "tuple": ((1, 2), torch.Size([3, 4])),
        "set": {3, 1, 2},
        "path": Path("/data/x"),
        "enum": _Color.RED,
        "dtype": torch.float16,
        2: None,
    }
    out = to_primitive(value, "hparams")
    assert out == {
        "cfg": {"widths": [8, 16], "opt": {"betas": [0.9, 0.99], "name": "adam"}, "name": "adam"},
        "list": [1, {"a": 2}],
        "np": [3, 0.5, True],
        "array": [[0, 1], [2, 3]],
        "tensor": [1.5, 2.5],
        "tuple": [[1, 2], [3, 4]],
        "set": [1, 2, 3],
        "path": "/data/x",
        "enum": "red",
        "dtype": "float16",
        2: None,
    }
    assert [type(item) for item in out["np"]] == [int, float, bool]
    assert type(to_primitive(np.float64(0.1), "lr")) is float  # a float subclass, but not pickled as one
    assert yaml.safe_load(yaml.safe_dump(out)) == out

    with pytest.raises(
        TypeError, match=r"'hparams\.layers\[1\]' is a torch\.nn\.modules\.linear\.Linear.*weights_only"
    ):
        to_primitive({"layers": [1, nn.Linear(2, 2)]}, "hparams")
    with pytest.raises(TypeError, match=r"'act' is a torch\.nn\.modules\.activation\.ReLU"):
        zoo.CNN(act=nn.ReLU())
