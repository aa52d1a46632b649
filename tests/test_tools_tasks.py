"""Every task through the tools' one path: a checkpoint written after training on real datamodules is predicted
(``zoo predict``), exported to ONNX and served over HTTP, and each answer equals what the model's own
``predict_step`` gives on the datamodule's batches, in the data's units (a forecaster's forecast and interval in
original units, a denoiser's image, a tagger's tag per step, a regressor's target).

The classifiers and language models are checked the same way in ``test_predict.py`` and ``test_serve.py``.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import ThreadServer, quiet_trainer
from PIL import Image

import zoo
from datamodules import (
    DigitScenesCaptionsDataModule,
    DigitsDataModule,
    FunctionDataModule,
    LocalExtremaDataModule,
    TimeSeriesDataModule,
)
from recipes.tools import predict
from recipes.tools.export import export_model
from recipes.tools.predictor import Predictor
from recipes.tools.serve import create_app
from zoo.checkpoint import data_preprocessing, read_checkpoint


def _trained_checkpoint(model: zoo.TaskModule, datamodule, path: Path, steps: int = 3) -> Path:
    """``model`` after a few steps on ``datamodule``, saved as a Trainer checkpoint (the data's preprocessing in it)."""
    torch.manual_seed(0)
    trainer = quiet_trainer(max_steps=steps, limit_val_batches=0)
    trainer.fit(model, datamodule)
    trainer.save_checkpoint(path)
    return path


def _linked(cls: type, datamodule, **kwargs) -> zoo.TaskModule:
    """``cls`` with the sizes and statistics its task takes from the data, as the CLI links them."""
    links = {key: getattr(datamodule, key) for key in cls.data_links if getattr(datamodule, key, None) is not None}
    return cls(**links, **kwargs)


def _served(predictor: Predictor, payload: dict) -> list[dict]:
    with ThreadServer(create_app(predictor)) as url:
        answer = httpx.post(f"{url}/predict", json=payload, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


def _onnx(checkpoint: Path) -> Predictor:
    saved = read_checkpoint(checkpoint)
    model = zoo.load_from_checkpoint(checkpoint)
    return Predictor.from_onnx(export_model(model, checkpoint.with_suffix(".onnx"), data_preprocessing(saved)))


def test_forecaster_answers_in_original_units_with_intervals(tmp_path):
    """Windows sent in original units: the forecast, its standard deviation and interval equal ``predict_step`` on
    the datamodule's scaled windows, from the checkpoint, the ONNX file and the server."""
    data = TimeSeriesDataModule(dataset="sunspots", input_size=16, horizon=4, batch_size=16)
    data.setup("fit")
    model = _linked(zoo.MLPForecaster, data, hidden_size=16, num_blocks=1, distribution="gaussian", window_norm=True)
    checkpoint = _trained_checkpoint(model, data, tmp_path / "forecaster.ckpt")
    data.setup("test")
    scaled, _, _ = next(iter(data.test_dataloader()))
    restored = zoo.load_from_checkpoint(checkpoint)
    expected = restored.predict_step(scaled[:5], 0)  # original units, from scaled windows
    pre = data.preprocessing
    raw = scaled[:5] * torch.tensor(pre["std"]) + torch.tensor(pre["mean"])  # the windows as a user has them
    predictor = Predictor.from_checkpoint(checkpoint)
    answers = predictor.predict_tensor(raw)
    for name in ("forecast", "std", "lower", "upper"):
        got = torch.tensor([answer[name] for answer in answers])
        torch.testing.assert_close(got, expected[name], rtol=1e-4, atol=1e-3)
    assert (torch.tensor([a["lower"] for a in answers]) < torch.tensor([a["upper"] for a in answers])).all()
    onnx = _onnx(checkpoint).predict_tensor(raw)
    for a, b in zip(answers, onnx, strict=True):
        np.testing.assert_allclose(a["forecast"], b["forecast"], rtol=1e-4, atol=1e-3)
    served = _served(predictor, {"inputs": raw.tolist()})
    for a, b in zip(answers, served, strict=True):
        np.testing.assert_allclose(a["upper"], b["upper"], rtol=1e-5, atol=1e-4)
    assert predictor.metadata()["input"]["preprocess"]["targets"] == ["sunactivity"]  # the column forecast


def test_denoiser_answers_images(tmp_path):
    """Noisy PNG files in, denoised PNG files out (``zoo predict --output_dir``), as ``predict_step`` denoises the
    normalized images; the server answers the same image as a base64 PNG."""
    data = DigitsDataModule(batch_size=32)
    model = _linked(zoo.DnCNN, data, width=8, dilations=(1, 2, 1), noise_std=0.2)
    checkpoint = _trained_checkpoint(model, data, tmp_path / "denoiser.ckpt")
    images, _ = data.load_arrays(train=False)
    noisy = (images[:3].float() + 40 * torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))).clamp(
        0, 255
    )
    noisy = noisy.round().to(torch.uint8)
    folder = tmp_path / "noisy"
    folder.mkdir()
    for index, image in enumerate(noisy):
        Image.fromarray(image[0].numpy()).save(folder / f"{index}.png")
    restored = zoo.load_from_checkpoint(checkpoint)
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = restored.predict_step((noisy.float() / 255 - mean) / std, 0)  # [0, 1] images
    expected = (expected * 255).round().to(torch.uint8)[:, 0]
    out = tmp_path / "clean"
    results = predict.main(["--ckpt_path", str(checkpoint), "--inputs", str(folder), "--output_dir", str(out)])
    for index, result in enumerate(sorted(results, key=lambda r: r["input"])):
        written = np.asarray(Image.open(result["image_file"]))
        assert np.abs(written.astype(int) - expected[index].numpy().astype(int)).max() <= 1
    served = _served(Predictor.from_checkpoint(checkpoint), {"inputs": noisy.tolist()})
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(served[0]["image_png"]))))
    assert np.abs(image.astype(int) - expected[0].numpy().astype(int)).max() <= 1
    onnx = _onnx(checkpoint).predict_tensor(noisy)
    assert np.abs(np.asarray(onnx[0]["image"])[..., 0].astype(int) - expected[0].numpy().astype(int)).max() <= 1


def test_tagger_answers_a_tag_per_step(tmp_path):
    data = LocalExtremaDataModule(num_train=256, num_test=64, max_length=12, batch_size=32)
    model = _linked(zoo.RNNTagger, data, cell="gru", hidden_size=16, bidirectional=True)
    checkpoint = _trained_checkpoint(model, data, tmp_path / "tagger.ckpt")
    data.setup("test")
    # max_length steps: a recurrent net's ONNX graph keeps the time axis of its export
    ids = torch.randint(0, data.vocab_size, (2, data.max_length), generator=torch.Generator().manual_seed(2))
    restored = zoo.load_from_checkpoint(checkpoint)
    expected = restored.predict_step(ids, 0)  # (B, T, C) probabilities
    predictor = Predictor.from_checkpoint(checkpoint)
    answers = predictor.predict_tensor(ids)
    assert [[tag["index"] for tag in answer["tags"]] for answer in answers] == expected.argmax(-1).tolist()
    probabilities = torch.tensor([[tag["probability"] for tag in answer["tags"]] for answer in answers])
    torch.testing.assert_close(probabilities, expected.max(-1).values, rtol=1e-5, atol=1e-6)
    assert _served(predictor, {"inputs": ids.tolist()}) == json.loads(json.dumps(answers))
    assert [t["index"] for t in _onnx(checkpoint).predict_tensor(ids)[0]["tags"]] == expected[0].argmax(-1).tolist()


def test_regressor_answers_in_original_units(tmp_path):
    data = FunctionDataModule(num_train=512, num_val=64, num_test=64, batch_size=64)
    model = _linked(zoo.MLPRegressor, data, hidden_dims=(16,))
    checkpoint = _trained_checkpoint(model, data, tmp_path / "regressor.ckpt")
    features = torch.tensor([[0.5, -0.25], [0.0, 0.0], [-0.9, 0.9]])
    (tmp_path / "features.json").write_text(json.dumps(features.tolist()))
    expected = zoo.load_from_checkpoint(checkpoint).predict_step(features, 0)
    results = predict.main(["--ckpt_path", str(checkpoint), "--inputs", str(tmp_path / "features.json")])
    torch.testing.assert_close(torch.tensor([r["prediction"] for r in results]), expected, rtol=1e-5, atol=1e-6)
    served = _served(Predictor.from_checkpoint(checkpoint), {"inputs": features.tolist()})
    assert [s["prediction"] for s in served] == [r["prediction"] for r in results]
    onnx = _onnx(checkpoint).predict_tensor(features)
    np.testing.assert_allclose([o["prediction"] for o in onnx], expected.tolist(), rtol=1e-4, atol=1e-5)


def test_seq2seq_answers_text_from_the_checkpoint_the_onnx_file_and_the_server(tmp_path):
    torch.manual_seed(0)
    model = zoo.create_model("seq2seq_transformer_test").eval()
    trainer = quiet_trainer(max_epochs=0)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "s2s.ckpt")
    predictor = Predictor.from_checkpoint(tmp_path / "s2s.ckpt")
    expected = {"input": "31415", "output": model.generate("31415")}
    assert predictor.predict_text("31415") == expected
    assert _onnx(tmp_path / "s2s.ckpt").predict_text("31415") == expected
    assert _served(predictor, {"text": "31415"}) == [expected]


@pytest.mark.parametrize("decoder", ["lstm", "transformer"])
def test_captioner_answers_a_caption_per_image_file(tmp_path, decoder):
    """A scene written as a PNG file is captioned by ``zoo predict``, the ONNX file and the server as
    ``predict_step`` captions the datamodule's normalized image; the vocabulary travels in the checkpoint."""
    data = DigitScenesCaptionsDataModule(num_train=64, num_val=16, num_test=16, batch_size=16, max_length=4)
    model = _linked(zoo.ImageCaptioner, data, encoder_widths=[8, 16], decoder=decoder, embed_dim=16, num_heads=2)
    checkpoint = _trained_checkpoint(model, data, tmp_path / "captioner.ckpt", steps=20)
    data.setup("test")
    images = next(iter(data.test_dataloader())).images[:2]
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    pixels = ((images * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    for index, image in enumerate(pixels):
        Image.fromarray(image[0].numpy()).save(tmp_path / f"scene{index}.png")
    restored = zoo.load_from_checkpoint(checkpoint)
    expected = restored.predict_step((pixels.float() / 255 - mean) / std, 0)
    assert all(isinstance(caption, str) and caption for caption in expected)
    results = predict.main(["--ckpt_path", str(checkpoint), "--inputs", str(tmp_path / "scene0.png")])
    assert [result["caption"] for result in results] == expected[:1]
    predictor = Predictor.from_checkpoint(checkpoint)
    assert predictor.metadata()["input"]["preprocess"]["vocab"] == data.vocab
    assert [answer["caption"] for answer in _served(predictor, {"inputs": pixels.tolist()})] == expected
    assert [answer["caption"] for answer in _onnx(checkpoint).predict_tensor(pixels)] == expected


def test_a_crafted_checkpoint_builds_no_datamodule_and_reads_no_path(tmp_path, monkeypatch):
    """A checkpoint naming an image-folder datamodule with a data_dir of our choice: the tools build no datamodule
    and never look at that folder; only the preprocessing saved in the checkpoint is read."""
    import datamodules
    import datamodules.image_folder

    model = zoo.create_model("cnn_digits")
    trainer = quiet_trainer(max_epochs=0)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    secret = tmp_path / "secret"
    (secret / "private_class").mkdir(parents=True)
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=True)
    checkpoint["datamodule_hyper_parameters"] = {
        "_class_path": "datamodules.image_folder.ImageFolderDataModule",
        "data_dir": str(secret),
    }
    checkpoint["ImageFolderDataModule"] = {"preprocessing": {"input": "image", "classes": [str(i) for i in range(10)]}}
    torch.save(checkpoint, tmp_path / "crafted.ckpt")

    def refuse(*args, **kwargs):
        raise AssertionError("a datamodule was built from the checkpoint")

    monkeypatch.setattr(datamodules.image_folder.ImageFolderDataModule, "__init__", refuse)
    seen = []
    real_listdir, real_scandir = __import__("os").listdir, __import__("os").scandir
    monkeypatch.setattr("os.listdir", lambda path=".": seen.append(str(path)) or real_listdir(path))
    monkeypatch.setattr("os.scandir", lambda path=".": seen.append(str(path)) or real_scandir(path))
    predictor = Predictor.from_checkpoint(tmp_path / "crafted.ckpt")
    with ThreadServer(create_app(predictor)) as url:
        metadata = httpx.get(f"{url}/metadata").json()
    assert metadata["classes"] == [str(i) for i in range(10)] and "private_class" not in json.dumps(metadata)
    assert not any(str(secret) in path for path in seen)
