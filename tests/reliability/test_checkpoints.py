"""Checkpoints to resume from hold the state they claim to hold."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import QUIET

import zoo
from recipes import digits_cnn
from recipes.console import main as zoo_main


def test_last_checkpoint_holds_the_final_epoch_even_after_the_best_one():
    """Lightning's save_last writes only when the best checkpoint changes; the recipes' last.ckpt never lags."""
    # lr 0.05 makes some later epoch worse than an earlier one, so the best checkpoint stops moving.
    cli = digits_cnn.main(
        ["fit", "--trainer.max_epochs=6", "--model.init_args.lr=0.05", "--test_after_fit=false", *QUIET]
    )
    folder = Path(cli.trainer.logger.log_dir) / "checkpoints"
    best = torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=True)
    last = torch.load(folder / "last.ckpt", weights_only=True)
    assert best["epoch"] < 5, "the test needs a run whose best epoch is not the last"
    assert (last["epoch"], last["global_step"]) == (5, cli.trainer.global_step)
    final = cli.model.state_dict()
    assert all(torch.equal(value, final[key]) for key, value in last["state_dict"].items())
    assert {p.name for p in folder.iterdir()} == {
        Path(cli.trainer.checkpoint_callback.best_model_path).name,
        "last.ckpt",
    }


SHORT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--test_after_fit=false", *QUIET]


@pytest.fixture
def digits_checkpoint() -> Path:
    cli = digits_cnn.main(["fit", *SHORT])
    return Path(cli.trainer.logger.log_dir) / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize(("content", "kind"), [(b"", "empty"), (b"epoch: 3\nlr: 0.1\n", "text"), (None, "truncated")])
def test_an_unreadable_checkpoint_is_named(digits_checkpoint: Path, tmp_path: Path, content, kind):
    broken = tmp_path / f"{kind}.ckpt"
    broken.write_bytes(digits_checkpoint.read_bytes()[:1000] if content is None else content)
    with pytest.raises(ValueError, match=rf"{kind}\.ckpt \(\d+ bytes\) is not a readable PyTorch checkpoint"):
        digits_cnn.main(["test", f"--ckpt_path={broken}", *QUIET])
    with pytest.raises(FileNotFoundError, match=r"^--ckpt_path .*missing\.ckpt: no such checkpoint file$"):
        digits_cnn.main(["test", f"--ckpt_path={tmp_path / 'missing.ckpt'}", *QUIET])


def test_a_checkpoint_of_another_model_class_is_refused_naming_both(tmp_path: Path):
    mlp = zoo_main(["fit", "--model=MLP", "--data=Digits", *SHORT])
    path = Path(mlp.trainer.logger.log_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match=r"is a checkpoint of zoo(\.mlp)?\.MLP, but this run's model is zoo\.CNN"):
        digits_cnn.main(["test", f"--ckpt_path={path}", *QUIET])


def test_resuming_with_changed_arguments_warns_with_both_values(digits_checkpoint: Path):
    with pytest.warns(UserWarning, match=r"lr: 0\.1 given, 0\.003 in the checkpoint.*keeps the checkpoint's learning"):
        resume = ["fit", f"--ckpt_path={digits_checkpoint}", "--model.init_args.lr=0.1", "--trainer.max_epochs=2"]
        digits_cnn.main([*resume, *SHORT[1:]])


def test_a_linked_value_given_by_hand_that_disagrees_with_the_data_is_an_error():
    with pytest.raises(ValueError, match=r"num_classes=5 disagrees with the data: DigitsDataModule has num_classes=10"):
        digits_cnn.main(["fit", "--model.init_args.num_classes=5", "--trainer.fast_dev_run=1", *QUIET])


class _Payload:
    """Pickles as a call to ``Path.touch``: loading it without weights_only would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_tampered_torch_hub_cache_file_is_refused_and_runs_nothing(tmp_path: Path, monkeypatch):
    import zoo

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"  # the name torchvision looks for
    cached.parent.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    torch.save({"conv1.weight": torch.zeros(1), "extra": _Payload(marker)}, cached)
    with pytest.raises(ValueError, match=r"resnet18-f37072fd\.pth \(\d+ bytes\) is not a readable plain state dict"):
        zoo.Backbone(num_classes=3, backbone="tv:resnet18", pretrained=True)
    assert not marker.exists()


def test_a_checkpoint_naming_a_module_outside_the_zoo_is_refused_without_importing_it(digits_checkpoint, monkeypatch):
    monkeypatch.syspath_prepend(str(Path.cwd()))  # as under `python -m recipes...`: the working directory is importable
    Path("planted.py").write_text("from pathlib import Path\nPath('imported').touch()\n")
    checkpoint = torch.load(digits_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["_class_path"] = "planted.Model"
    torch.save(checkpoint, "planted.ckpt")
    with pytest.raises(ValueError, match=r"names planted\.Model, which is outside the trusted packages \(zoo\)"):
        digits_cnn.main(["test", "--ckpt_path=planted.ckpt", *QUIET])
    assert not Path("imported").exists()


def test_flipped_bytes_inside_a_checkpoint_are_caught_before_loading(digits_checkpoint: Path, tmp_path: Path):
    data = bytearray(digits_checkpoint.read_bytes())
    middle = len(data) // 2  # inside a tensor record: torch.load alone would read it without complaint
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    flipped = tmp_path / "flipped.ckpt"
    flipped.write_bytes(bytes(data))
    assert torch.load(flipped, weights_only=True)["state_dict"]  # the damage is silent to torch.load

    message = r"flipped\.ckpt is corrupt: its record '.+' fails the CRC-32 check"
    with pytest.raises(ValueError, match=message):
        digits_cnn.main(["test", f"--ckpt_path={flipped}", *QUIET])
    with pytest.raises(ValueError, match=message):
        zoo.CNN.load_from_checkpoint(flipped)
    model = zoo.CNN.load_from_checkpoint(digits_checkpoint)  # the intact file still loads, tensors only
    saved = torch.load(digits_checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in saved.items())


def test_load_from_checkpoint_in_python_refuses_a_foreign_class_without_importing_it(digits_checkpoint, monkeypatch):
    monkeypatch.syspath_prepend(str(Path.cwd()))
    Path("planted_py.py").write_text("from pathlib import Path\nPath('imported_py').touch()\n")
    checkpoint = torch.load(digits_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["_class_path"] = "planted_py.Model"
    torch.save(checkpoint, "planted_py.ckpt")
    with pytest.raises(ValueError, match=r"'planted_py\.Model' requested by the checkpoint .* was blocked"):
        zoo.CNN.load_from_checkpoint("planted_py.ckpt")
    checkpoint["hyper_parameters"]["_instantiator"] = "planted_py.build"
    torch.save(checkpoint, "planted_py.ckpt")
    with pytest.raises(ValueError, match=r"instantiator 'planted_py\.build' .* was blocked"):
        zoo.CNN.load_from_checkpoint("planted_py.ckpt")
    assert not Path("imported_py").exists()


def _variant(source: Path, target: Path, change) -> Path:
    checkpoint = torch.load(source, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, target)
    return target


def test_nan_weights_are_refused_by_every_reader_naming_the_tensor(digits_checkpoint, tmp_path, capsys):
    def poison(checkpoint):
        checkpoint["state_dict"]["head.weight"][0, :3] = float("nan")

    bad = _variant(digits_checkpoint, tmp_path / "diverged.ckpt", poison)
    message = r"diverged\.ckpt holds NaN/Inf weights: head\.weight has 3 of \d+ values non-finite"
    with pytest.raises(ValueError, match=message):
        zoo.load_from_checkpoint(bad)
    with pytest.raises(ValueError, match=message):
        zoo.CNN.load_from_checkpoint(bad)
    with pytest.raises(ValueError, match=message):
        digits_cnn.main(["test", f"--ckpt_path={bad}", *QUIET])
    with pytest.raises(SystemExit, match=message):
        zoo_main(["predict", "--ckpt_path", str(bad), "--text", "x"])
    with pytest.raises(SystemExit, match=message):
        zoo_main(["export", "--ckpt_path", str(bad), "--output", str(tmp_path / "x.onnx")])
    with pytest.warns(UserWarning, match="loaded anyway"):
        model = zoo.load_from_checkpoint(bad, allow_nonfinite=True)  # to inspect it
    assert model.head.weight.isnan().sum() == 3


@pytest.mark.parametrize("damage", ["shape", "missing", "argument"])
def test_a_checkpoint_that_does_not_fit_its_class_is_named(damage, digits_checkpoint, tmp_path):
    def change(checkpoint):
        if damage == "shape":
            checkpoint["hyper_parameters"]["channels"] = [16, 64]
        elif damage == "missing":
            del checkpoint["state_dict"]["head.bias"]
        else:
            checkpoint["hyper_parameters"]["no_such_argument"] = 1

    bad = _variant(digits_checkpoint, tmp_path / f"{damage}.ckpt", change)
    expected = {"shape": "size mismatch for", "missing": "Missing key", "argument": "no_such_argument"}[damage]
    with pytest.raises(ValueError, match=rf"{damage}\.ckpt does not fit CNN as it is now \(.*{expected}"):
        zoo.load_from_checkpoint(bad)
    with pytest.raises(SystemExit, match=rf"{damage}\.ckpt does not fit CNN"):
        zoo_main(["export", "--ckpt_path", str(bad), "--output", str(tmp_path / "x.onnx")])


def test_a_shortened_record_with_a_valid_checksum_is_named(digits_checkpoint, tmp_path):
    """A record rewritten shorter, with its CRC recomputed: the checksum passes, the load must still name the file."""
    import zipfile

    bad = tmp_path / "short.ckpt"
    with zipfile.ZipFile(digits_checkpoint) as source, zipfile.ZipFile(bad, "w") as target:
        records = [info for info in source.infolist() if "/data/" in info.filename]
        largest = max(records, key=lambda info: info.file_size)
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info, data[: len(data) // 2] if info is largest else data)
    with pytest.raises(ValueError, match=r"short\.ckpt \(\d+ bytes\) is not a readable PyTorch checkpoint"):
        zoo.load_from_checkpoint(bad)
    with pytest.raises(ValueError, match=r"short\.ckpt \(\d+ bytes\) is not a readable PyTorch checkpoint"):
        digits_cnn.main(["test", f"--ckpt_path={bad}", *QUIET])
