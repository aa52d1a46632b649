"""Output paths of the tools are checked before any work: a missing folder, a folder where a file goes (or the
reverse), a suffix that contradicts the format, and an existing file (kept unless ``--overwrite``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import quiet_trainer
from PIL import Image

import zoo
from datamodules import DigitsDataModule
from recipes.tools import explain, export, predict, quantize
from recipes.tools.predictor import Predictor


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A digits CNN checkpoint (one step), a denoiser checkpoint, and two digit images."""
    tmp = tmp_path_factory.mktemp("outputs")
    torch.manual_seed(0)
    paths = {}
    models = {"cnn": zoo.create_model("cnn_digits"), "denoiser": zoo.DnCNN(img_size=8, width=8, dilations=(1, 1))}
    for name, model in models.items():
        trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
        trainer.fit(model, DigitsDataModule(batch_size=16))
        trainer.save_checkpoint(paths.setdefault(name, tmp / f"{name}.ckpt"))
    images, _ = DigitsDataModule().load_arrays(train=False)
    for index in range(2):
        Image.fromarray(images[index, 0].numpy()).save(paths.setdefault(f"image{index}", tmp / f"digit{index}.png"))
    return paths


def _fails(tool, args: list, message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        tool.main([str(arg) for arg in args])
    assert message in str(exit_info.value), exit_info.value


def test_predict_output_in_a_missing_folder_fails_before_predicting(files, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(Predictor, "from_checkpoint", lambda *args: calls.append(args))  # nothing may load
    target = tmp_path / "nodir" / "preds.json"
    _fails(predict, ["--ckpt_path", files["cnn"], "--inputs", files["image0"], "--output", target], "does not exist")
    assert calls == [] and not target.parent.exists()


def test_predict_refuses_to_overwrite_and_a_wrong_suffix(files, tmp_path):
    target = tmp_path / "preds.json"
    target.write_text("keep")
    args = ["--ckpt_path", files["cnn"], "--inputs", files["image0"], "--output", target]
    _fails(predict, args, f"{target} exists; pass --overwrite")
    assert target.read_text() == "keep"
    predict.main([str(arg) for arg in [*args, "--overwrite", "true"]])
    assert target.read_text().startswith("[")
    _fails(predict, [*args[:-1], tmp_path / "preds.png"], "must end in .json")
    _fails(predict, [*args[:-1], tmp_path], "is a folder; give the path of a file")


def test_predict_images_are_not_overwritten(files, tmp_path):
    folder = tmp_path / "clean"
    args = ["--ckpt_path", files["denoiser"], "--inputs", files["image0"], files["image1"], "--output_dir", folder]
    predict.main([str(arg) for arg in args])
    written = sorted(folder.iterdir())
    assert [path.name for path in written] == ["0000_digit0.png", "0001_digit1.png"]
    before = [path.read_bytes() for path in written]
    written[1].write_bytes(b"mine")
    _fails(predict, args, f"{folder}/ already holds 0000_digit0.png, 0001_digit1.png; pass --overwrite")
    assert written[1].read_bytes() == b"mine"
    predict.main([str(arg) for arg in [*args, "--overwrite", "true"]])
    assert [path.read_bytes() for path in written] == before
    (tmp_path / "afile").write_text("x")
    _fails(predict, [*args[:-1], tmp_path / "afile"], "is a file; give a folder")


@pytest.mark.parametrize(
    ("output", "extra", "message"),
    [
        ("keep.txt", [], "--output end in it, got 'txt' and"),
        ("model.onnx", ["--format", "pt2"], "--output end in it, got 'pt2' and"),
        ("nodir/model.onnx", [], "does not exist; create it first"),
    ],
)
def test_export_checks_its_output_before_exporting(files, tmp_path, capsys, output, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--ckpt_path", str(files["cnn"]), "--output", str(tmp_path / output), *extra])
    assert message in f"{exit_info.value} {capsys.readouterr().err}"  # usage errors go to stderr
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_to_overwrite(files, tmp_path):
    target = tmp_path / "keep.onnx"
    target.write_bytes(b"precious")
    args = ["--ckpt_path", files["cnn"], "--output", target]
    _fails(export, args, f"{target} exists; pass --overwrite")
    assert target.read_bytes() == b"precious"
    export.main([str(arg) for arg in [*args, "--overwrite", "true"]])
    assert Predictor.load(target).input_shape == [None, 1, 8, 8]


def test_explain_output_that_is_a_file_is_named(files, tmp_path):
    target = tmp_path / "explain.png"
    target.write_bytes(b"not a folder")
    args = ["--ckpt_path", files["cnn"], "--inputs", files["image0"], "--method", "saliency", "--output", target]
    _fails(explain, args, f"--output {target} is a file; give a folder")
    folder = tmp_path / "maps"
    args[-1] = folder
    (written,) = explain.main([str(arg) for arg in args])
    written.write_bytes(b"mine")
    _fails(explain, args, f"{folder}/ already holds {written.name}; pass --overwrite")
    assert written.read_bytes() == b"mine"
    explain.main([str(arg) for arg in [*args, "--overwrite", "true"]])
    assert written.read_bytes().startswith(b"\x89PNG")


def test_quantize_checks_its_output(files, tmp_path):
    target = tmp_path / "small.pt"
    target.write_bytes(b"keep")
    _fails(quantize, ["--ckpt_path", files["cnn"], "--output", target], f"{target} exists; pass --overwrite")
    _fails(quantize, ["--ckpt_path", files["cnn"], "--output", tmp_path / "small.onnx"], "must end in .pt or .pth")
    assert target.read_bytes() == b"keep" and [path.name for path in tmp_path.iterdir()] == ["small.pt"]
