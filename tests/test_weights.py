"""Published weights (``zoo.weights``): metadata, the checked and safe load, the errors that name the file, and a slow
re-evaluation of every published set on its real test split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

import zoo
from recipes.tools.fitting import fit_config
from recipes.tools.predict import main as predict
from zoo.checkpoint import import_class
from zoo.weights import MANIFEST, PACKAGE_WEIGHTS, file_sha256, read_manifest

PUBLISHED = read_manifest()


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "weights"
    shutil.copytree(PACKAGE_WEIGHTS, folder)
    return folder


def test_every_published_set_names_its_file_hash_metric_and_command():
    assert "cnn_digits" in zoo.list_weights()
    for preset, weights in PUBLISHED.items():
        path = PACKAGE_WEIGHTS / weights.file
        assert file_sha256(path) == weights.sha256
        assert zoo.is_model(preset) and weights.command.startswith(f"python -m recipes.{weights.recipe} fit")
        assert weights.metric.startswith("test/") and weights.value > 0
        model = zoo.create_model(preset, pretrained=True)
        assert sum(p.numel() for p in model.parameters()) == weights.num_params
    size = sum(path.stat().st_size for path in PACKAGE_WEIGHTS.iterdir())
    assert size < 20e6, f"the package's weights take {size / 1e6:.1f} MB; larger sets belong in $ZOO_WEIGHTS_DIR"


def test_pretrained_loads_the_published_tensors_and_overrides_that_keep_the_shape_work():
    weights = zoo.get_weights("cnn_digits")
    stored = torch.load(PACKAGE_WEIGHTS / weights.file, weights_only=True)
    model = zoo.create_model("cnn_digits", pretrained=True, lr=0.5)
    assert model.hparams.lr == 0.5
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, stored[key]), key
    fresh = zoo.create_model("cnn_digits")
    assert not torch.equal(fresh.state_dict()["head.weight"], stored["head.weight"])


def test_a_damaged_missing_or_unknown_set_is_refused_with_its_file_named(tmp_path, monkeypatch):
    folder = _copy(tmp_path)
    path = folder / "cnn_digits.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"cnn_digits\.pt has SHA-256 .* not the published"):
        zoo.create_model("cnn_digits", pretrained=True, weights_dir=folder)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"put cnn_digits\.pt in .*weights/"):
        zoo.create_model("cnn_digits", pretrained=True, weights_dir=folder)
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(folder))  # the environment's folder is read too
    with pytest.raises(FileNotFoundError, match=r"cnn_digits\.pt"):
        zoo.create_model("cnn_digits", pretrained=True)
    monkeypatch.delenv("ZOO_WEIGHTS_DIR")
    with pytest.raises(ValueError, match=r"no published weights for 'cnn_digit'.*Did you mean cnn_digits"):
        zoo.get_weights("cnn_digit")
    with pytest.raises(ValueError, match="do not fit this model"):
        zoo.create_model("cnn_digits", pretrained=True, channels=(16, 32))
    (folder / MANIFEST).write_text(json.dumps([{"preset": "cnn_digits"}]))
    with pytest.raises(ValueError, match=r"weights\.json is not a weights manifest"):
        zoo.list_weights(folder)


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_published_weights_reach_their_recorded_metric_on_the_real_test_split(preset):
    """The recorded value again, from the package's file, at the recipe's precision, within one test sample (a thread
    count or kernel may sum the logits in another order)."""
    weights = PUBLISHED[preset]
    args = [arg.replace("../shared/data", str(SHARED_DATA)) for arg in weights.command.split()[4:]]
    if any(str(SHARED_DATA) in arg for arg in args) and not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    config = fit_config(weights.recipe, args)
    datamodule = import_class(config.data.class_path, trusted=("datamodules",))(**dict(config.data.init_args))
    model = zoo.create_model(preset, pretrained=True)
    precision = config.trainer.get("precision") or "32-true"
    fast_path = [c for c in config.trainer.callbacks or [] if c.class_path.endswith("FastPath")]
    if fast_path and fast_path[0].init_args.get("channels_last", True):
        model.to(memory_format=torch.channels_last)  # as the recipe tested: the kernels of its weights' layout
    trainer = L.Trainer(
        accelerator="cpu", precision=precision, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    (metrics,) = trainer.test(model, datamodule=datamodule, verbose=False)
    samples = len(datamodule.test_dataloader().dataset)
    assert metrics[weights.metric] == pytest.approx(weights.value, abs=1 / samples + 1e-6)


def test_the_tools_answer_from_published_weights_with_their_data_preprocessing(tmp_path):
    weights = zoo.get_weights("cnn_digits")
    mean, std = weights.preprocessing["mean"][0], weights.preprocessing["std"][0]
    pixels = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    model = zoo.create_model("cnn_digits", pretrained=True).eval()
    with torch.no_grad():
        expected = model((pixels / 255 - mean) / std).softmax(-1)
    np.save(tmp_path / "digits.npy", pixels.numpy())
    answers = predict(["--pretrained", "cnn_digits", "--inputs", str(tmp_path / "digits.npy"), "--top_k", "1"])
    assert [answer["index"] for answer in answers] == expected.argmax(-1).tolist()
    assert [answer["probability"] for answer in answers] == pytest.approx(expected.max(-1).values.tolist(), abs=1e-5)
    assert [answer["class"] for answer in answers] == [str(i) for i in expected.argmax(-1).tolist()]
