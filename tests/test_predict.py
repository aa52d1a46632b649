"""`zoo predict` and the tools' inference path on a digits CNN and a character GPT, each trained briefly by its
recipe: images written as PNG files get the same predictions as the model's own forward on the datamodule's
tensors, an ONNX file agrees with its checkpoint, and bad input fails with a message naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from datamodules import DigitsDataModule, ImageFolderDataModule
from datamodules.base import ImageDecodeError, ImageTooLargeError
from datamodules.transforms import normalize_batch
from recipes import digits_cnn, shakespeare_char_gpt
from recipes.console import main as zoo_main
from recipes.tools.export import main as export
from recipes.tools.inference import Preprocessing
from recipes.tools.predict import main as predict
from recipes.tools.predictor import InputError, Predictor, collect_images

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]
N_IMAGES = 24


def _train(tmp: Path, recipe, *args: str) -> str:
    with pytest.MonkeyPatch.context() as patch:  # logs and checkpoints into tmp, not the working directory
        patch.chdir(tmp)
        torch.manual_seed(0)
        cli = recipe.main(["fit", *QUIET, "--test_after_fit=false", *args])
    return cli.trainer.checkpoint_callback.best_model_path


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict:
    """A digits CNN trained for two epochs, its ONNX file, and test images as PNG files in nested folders."""
    tmp = tmp_path_factory.mktemp("digits")
    ckpt = _train(tmp, digits_cnn, "--trainer.max_epochs=2")
    images, targets = DigitsDataModule().load_arrays(train=False)
    images, targets = images[:N_IMAGES], targets[:N_IMAGES]
    folder = tmp / "images"
    for index, image in enumerate(images):
        path = folder / f"digit{targets[index]}" / f"{index:03d}.png"  # one sub-folder per class: found recursively
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(path)
    model = zoo.load_from_checkpoint(ckpt)
    mean, std = torch.tensor(DigitsDataModule.mean), torch.tensor(DigitsDataModule.std)
    with torch.no_grad():
        probabilities = model(normalize_batch(images, mean, std)).softmax(-1)
    onnx = export(["--ckpt_path", ckpt, "--output", str(tmp / "digits.onnx")])  # `zoo export`, with the data's
    return {
        "ckpt": ckpt,
        "onnx": str(onnx),
        "folder": folder,
        "images": images,
        "targets": targets,
        "probabilities": probabilities,
        "tmp": tmp,
    }


def _by_index(results: list[dict]) -> list[dict]:
    """Results in the order of the images' indices (the file names)."""
    return sorted(results, key=lambda result: Path(result["input"]).name)


def test_predict_on_a_folder_equals_the_model_forward(digits, tmp_path):
    output = tmp_path / "preds.json"
    results = predict(["--ckpt_path", digits["ckpt"], "--inputs", str(digits["folder"]), "--output", str(output)])
    assert len(results) == N_IMAGES and json.loads(output.read_text()) == results
    results = _by_index(results)
    expected = digits["probabilities"]
    for index, result in enumerate(results):
        top = torch.tensor([entry["probability"] for entry in result["top_k"]])
        indices = [entry["index"] for entry in result["top_k"]]
        torch.testing.assert_close(top, expected[index, indices], rtol=1e-5, atol=1e-6)
        assert indices == expected[index].topk(5).indices.tolist()
        assert result["class"] == str(result["index"]) and len(result["top_k"]) == 5
    accuracy = np.mean(
        [result["index"] == target for result, target in zip(results, digits["targets"].tolist(), strict=True)]
    )
    assert accuracy >= 0.8  # a real model (val/acc about 0.95 after two epochs), not chance


def test_zoo_command_dispatches_to_the_file_predictor(digits, capsys):
    image = sorted(digits["folder"].rglob("*.png"))[0]
    results = zoo_main(["predict", "--ckpt_path", digits["ckpt"], f"--inputs={image}", "--top_k", "3"])
    assert len(results) == 1 and len(results[0]["top_k"]) == 3
    printed = capsys.readouterr().out
    assert image.name in printed and f"{results[0]['probability']:.4f}" in printed  # the rich table


def test_onnx_agrees_with_the_checkpoint(digits):
    from_ckpt = _by_index(predict(["--ckpt_path", digits["ckpt"], "--inputs", str(digits["folder"])]))
    from_onnx = _by_index(predict(["--onnx", digits["onnx"], "--inputs", str(digits["folder"])]))
    for a, b in zip(from_ckpt, from_onnx, strict=True):
        assert [entry["index"] for entry in a["top_k"]] == [entry["index"] for entry in b["top_k"]]
        assert a["class"] == b["class"]
        assert b["probability"] == pytest.approx(a["probability"], abs=1e-5)
    onnx = Predictor.load(digits["onnx"])
    assert onnx.preprocessing == Predictor.load(digits["ckpt"]).preprocessing  # written into the file by zoo export
    assert onnx.metadata()["classes"] == [str(digit) for digit in range(10)]
    assert onnx.metadata()["task"] == "ImageClassifier" and onnx.task is zoo.CNN
    assert onnx.input_shape == [None, 1, 8, 8] and onnx.input_dtype == "uint8"  # pixels; the file normalizes


def test_rgb_and_larger_images_are_converted_like_the_training_data(digits, tmp_path):
    """An RGB copy of a grey digit reads as the original; larger RGB photos read as the image-folder datamodule's
    evaluation transform makes them (resize with antialiasing, grayscale, normalization)."""
    image = digits["images"][0, 0].numpy()
    Image.fromarray(np.stack([image] * 3, axis=-1)).save(tmp_path / "rgb.png")
    predictor = Predictor.load(digits["ckpt"])
    grey = predictor.load_image(str(digits["folder"] / f"digit{digits['targets'][0]}" / "000.png"))
    torch.testing.assert_close(predictor.load_image(str(tmp_path / "rgb.png")), grey, rtol=0, atol=0)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("a", "b"):
            (tmp_path / "tree" / split / label).mkdir(parents=True)
            pixels = rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "tree" / split / label / "photo.png")
    data = ImageFolderDataModule(
        str(tmp_path / "tree"), 8, 1, DigitsDataModule.mean, DigitsDataModule.std, augment="none", num_workers=0
    )
    data.setup("test")
    for index, label in enumerate(("a", "b")):
        expected, _ = data.datasets["test"][index]
        read = predictor.load_image(str(tmp_path / "tree" / "test" / label / "photo.png"))  # uint8 at the model's size
        normalized = predictor.backend.module.normalize(read.unsqueeze(0))[0]  # what the model then reads
        torch.testing.assert_close(normalized, expected, rtol=0, atol=1e-5)
    results = predictor.predict_images([str(tmp_path / "rgb.png")])
    assert results[0]["index"] == digits["probabilities"][0].argmax().item()


def test_tensor_inputs_are_checked_against_the_model_input(digits):
    """Image models read uint8 pixels as tensors too (the data's own units): the answers equal the images'."""
    predictor = Predictor.load(digits["ckpt"])
    x = digits["images"][:4]
    results = predictor.predict_tensor(x, top_k=1)
    assert [result["index"] for result in results] == digits["probabilities"][:4].argmax(-1).tolist()
    assert predictor.predict_tensor(x[0])[0]["index"] == results[0]["index"]  # one sample without the batch dim
    with pytest.raises(InputError, match=r"expects inputs of shape \(B, 1, 8, 8\) uint8, got shape \(4, 3, 8, 8\)"):
        predictor.predict_tensor(x.expand(4, 3, 8, 8))
    with pytest.raises(InputError, match=r"\(B, 1, 8, 8\) uint8, got shape \(1, 1, 28, 28\)"):
        predictor.predict_tensor(torch.zeros(1, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(InputError, match=r"\(B, 1, 8, 8\) uint8, got dtype torch.float32"):
        predictor.predict_tensor(torch.zeros(1, 1, 8, 8))
    with pytest.raises(InputError, match=r"reads pixel values in \[0, 255\], got \[0, 300\]"):
        predictor.predict_tensor(torch.tensor([[[[0, 300] * 4] * 8]]))


def test_unreadable_files_and_wrong_modes_are_named(digits, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(SystemExit, match=r"Cannot decode image .*notes\.png"):
        predict(["--ckpt_path", digits["ckpt"], "--inputs", str(digits["folder"]), str(tmp_path / "notes.png")])
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")  # 16-bit grey
    with pytest.raises(SystemExit, match=r"deep\.png: image mode 'I(;16)?' is not read.*8-bit grayscale or RGB"):
        predict(["--ckpt_path", digits["ckpt"], "--inputs", str(tmp_path / "deep.png")])
    predictor = Predictor.load(digits["ckpt"])
    predictor.max_pixels = 1000
    Image.fromarray(np.zeros((40, 30), dtype=np.uint8)).save(tmp_path / "large.png")
    with pytest.raises(ImageTooLargeError, match=r"large\.png: 30x40 pixels is more than the 1000"):
        predictor.predict_images([str(tmp_path / "large.png")])
    with pytest.raises(ImageDecodeError):
        predictor.load_image(b"not an image either")
    with pytest.raises(SystemExit, match=r"missing\.png: no such file or folder"):
        predict(["--ckpt_path", digits["ckpt"], "--inputs", str(tmp_path / "missing.png")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"empty: no image files"):
        predict(["--ckpt_path", digits["ckpt"], "--inputs", str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match=r"does not read text"):
        predict(["--ckpt_path", digits["ckpt"], "--text", "hello"])
    with pytest.raises(SystemExit, match=r"no such checkpoint file"):
        predict(["--ckpt_path", str(tmp_path / "none.ckpt"), "--inputs", str(digits["folder"])])
    with pytest.raises(SystemExit, match=r"notes\.png is not a readable exported model"):
        predict(["--onnx", str(tmp_path / "notes.png"), "--inputs", str(digits["folder"])])


def test_collect_images_walks_folders_recursively_and_keeps_named_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.png", "a/b/2.JPG", "a/b/skip.txt", "named.dat"):
        (tmp_path / name).write_bytes(b"")
    found = collect_images([tmp_path / "a", tmp_path / "named.dat"])
    assert [Path(path).relative_to(tmp_path).as_posix() for path in found] == ["a/1.png", "a/b/2.JPG", "named.dat"]


def test_preprocessing_of_a_checkpoint_comes_from_its_datamodule(digits):
    preprocessing = Predictor.load(digits["ckpt"]).preprocessing
    assert preprocessing == Preprocessing(
        input="image", in_channels=1, img_size=(8, 8), mean=(0.3055,), std=(0.3760,), classes=tuple("0123456789")
    )
    assert Preprocessing.from_dict(json.loads(json.dumps(preprocessing.to_dict()))) == preprocessing


@pytest.fixture(scope="module")
def language_model(tmp_path_factory) -> dict:
    """A one-layer character GPT trained for 30 steps on a small text file, and its ONNX file."""
    tmp = tmp_path_factory.mktemp("lm")
    (tmp / "text.txt").write_text("First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak.\n" * 40)
    ckpt = _train(
        tmp,
        shakespeare_char_gpt,
        f"--data.init_args.path={tmp / 'text.txt'}",
        "--data.init_args.block_size=16",
        "--data.init_args.batches_per_epoch=10",
        "--trainer.max_steps=30",
        "--model.init_args.n_layer=1",
        "--model.init_args.n_head=2",
        "--model.init_args.n_embd=32",
        "--model.init_args.warmup_steps=0",
    )
    model = zoo.load_from_checkpoint(ckpt)
    onnx = export(["--ckpt_path", ckpt, "--output", str(tmp / "lm.onnx")])
    return {"ckpt": ckpt, "onnx": str(onnx), "model": model}


def test_text_continues_as_the_model_generates(language_model):
    model = language_model["model"]
    results = predict(["--ckpt_path", language_model["ckpt"], "--text", "Speak", "--max_new_tokens", "40"])
    expected = model.generate("Speak", 40, 0.8, None, torch.Generator().manual_seed(0))
    assert results == [{"input": "Speak", "output": expected, "continuation": expected[5:]}]
    assert len(results[0]["continuation"]) == 40
    with pytest.raises(SystemExit, match=r"characters \['!', 'Q', 'x'\] are not in the model's vocabulary"):
        predict(["--ckpt_path", language_model["ckpt"], "--text", "Qx!"])


def test_onnx_language_model_generates_what_the_checkpoint_does(language_model):
    """Greedy and sampled continuations past block_size (the ONNX loop rereads the last 16 tokens)."""
    ckpt, onnx = Predictor.load(language_model["ckpt"]), Predictor.load(language_model["onnx"])
    assert onnx.kind == "text" and onnx.preprocessing.vocab == ckpt.preprocessing.vocab
    for temperature in (0.0, 1.0):
        a = ckpt.predict_text("Before we", 30, temperature, seed=3)
        b = onnx.predict_text("Before we", 30, temperature, seed=3)
        assert a == b
    with pytest.raises(InputError, match="not in the model's vocabulary"):
        onnx.predict_text("~")
    with pytest.raises(InputError, match=r"token ids in \[0, \d+\]"):
        onnx.predict_tensor(torch.full((1, 4), 999))


def test_sequence_to_sequence_model_answers_text():
    torch.manual_seed(0)
    model = zoo.create_model("seq2seq_transformer_test", vocab="0123456789", max_length=6).eval()
    predictor = Predictor.from_model(model)
    assert predictor.kind == "text" and predictor.metadata()["task"] == "Seq2SeqTask"
    assert predictor.predict_text("3141") == {"input": "3141", "output": model.generate("3141")}
    ids = model.encode_text("3141").unsqueeze(0)  # the same source as ids
    assert predictor.predict_tensor(ids)[0]["output"] == model.generate("3141")
    with pytest.raises(InputError, match="max_length"):
        predictor.predict_text("1234567")
