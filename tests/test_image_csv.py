"""ImageCSVDataModule on PNG and JPEG files and CSV files written here: paths, labels, splits, the balanced sampler
and its resume, errors named before training, and a model trained from it."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler
from PIL import Image
from torch.utils.data import DistributedSampler, WeightedRandomSampler

import zoo
from datamodules import BalancedSampler, ImageCSVDataModule, ResumableLoader
from recipes.console import main as zoo_main
from tests.conftest import QUIET, quiet_trainer

# Exact pixels back: no augmentation, no resizing (images are written at img_size), mean 0 and std 1.
PLAIN = dict(img_size=(6, 8), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), augment="none", num_workers=0)


def _image(path: Path, colour: tuple[int, int, int] | int, size: tuple[int, int] = (6, 8)) -> np.ndarray:
    """Write a one-colour image (PNG, or JPEG by its ending) and return its pixels ``(H, W, 3)``."""
    pixels = np.zeros((*size, 3), np.uint8) + np.asarray(colour, np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def _csv(path: Path, rows: list[tuple], header: str = "path,label") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    return path


def _dataset(tmp_path: Path, counts: dict[str, int], split: bool = False) -> Path:
    """One small image per row, the ``i``-th class coloured ``(120 * i, 0, 255 - 120 * i)``; ``counts`` rows per
    class."""
    rows = []
    for i, (label, count) in enumerate(counts.items()):
        for n in range(count):
            _image(tmp_path / "img" / f"{label}{n}.png", (120 * i, 0, 255 - 120 * i), size=(4, 4))
            rows.append((f"img/{label}{n}.png", label, *(("train",) if split else ())))
    return _csv(tmp_path / "data.csv", rows, "path,label,split" if split else "path,label")


def _all(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_relative_and_absolute_paths_png_and_jpeg_with_string_labels(tmp_path):
    """Relative paths are read from the CSV's folder, absolute ones as they are; pixels come back exactly (PNG) or
    within JPEG's error; class names sorted, index = position."""
    pixels = {
        "images/cat/a.png": _image(tmp_path / "data" / "images/cat/a.png", (10, 20, 30)),
        "dog.jpg": _image(tmp_path / "data" / "dog.jpg", (200, 100, 50)),
        str(tmp_path / "elsewhere" / "b.png"): _image(tmp_path / "elsewhere" / "b.png", (0, 255, 128)),
    }
    rows = [("images/cat/a.png", "cat"), ("dog.jpg", "dog"), (str(tmp_path / "elsewhere" / "b.png"), "bird")]
    csv = _csv(tmp_path / "data" / "labels.csv", rows)
    dm = ImageCSVDataModule(str(csv), val_fraction=0.0, test_fraction=0.0, **PLAIN)  # every row trains, in order
    assert dm.classes == ["bird", "cat", "dog"] and dm.num_classes == 3
    dm.setup("fit")
    x, y = _all(torch.utils.data.DataLoader(dm.datasets["train"], batch_size=3))
    assert y.tolist() == [1, 2, 0] and x.shape == (3, 3, 6, 8) and x.dtype == torch.float32
    for image, path in zip(x, pixels, strict=True):
        expected = torch.from_numpy(pixels[path]).permute(2, 0, 1).float() / 255
        atol = 3 / 255 if path.endswith(".jpg") else 1e-6
        torch.testing.assert_close(image, expected, atol=atol, rtol=0)


def test_data_dir_roots_relative_paths_and_integer_labels_keep_numeric_order(tmp_path):
    for name, colour in [("x.png", 0), ("y.png", 90), ("z.png", 180), ("w.png", 250)]:
        _image(tmp_path / "pictures" / name, colour)
    rows = [("x.png", 10), ("y.png", 2), ("z.png", 0), ("w.png", 2)]
    csv = _csv(tmp_path / "meta" / "labels.csv", rows)
    dm = ImageCSVDataModule(str(csv), data_dir=str(tmp_path / "pictures"), val_fraction=0.0, test_fraction=0.0, **PLAIN)
    assert dm.classes == ["0", "2", "10"]  # 2 before 10
    dm.setup("fit")
    _, y = _all(torch.utils.data.DataLoader(dm.datasets["train"], batch_size=4))
    assert y.tolist() == [2, 1, 0, 1]
    assert dm.preprocessing["classes"] == ["0", "2", "10"] and dm.preprocessing["img_size"] == [6, 8]

    labels_0_to_2 = _csv(tmp_path / "meta" / "zero_based.csv", [("x.png", 1), ("y.png", 0), ("z.png", 2)])
    dm = ImageCSVDataModule(str(labels_0_to_2), data_dir=str(tmp_path / "pictures"), **PLAIN)
    assert dm.classes == ["0", "1", "2"]  # labels 0..K-1 keep their values as indices


def _split_labels(dm: ImageCSVDataModule) -> dict[str, list[int]]:
    """Per split, the number of samples of each class (read through the loaders)."""
    counts = {}
    for split in dm.datasets:
        _, y = _all(torch.utils.data.DataLoader(dm.datasets[split], batch_size=64))
        counts[split] = torch.bincount(y, minlength=dm.num_classes).tolist()
    return counts


def test_stratified_split_keeps_each_class_proportion_exactly_and_follows_the_seed(tmp_path):
    csv = _dataset(tmp_path, {"a": 40, "b": 20, "c": 10})
    options = dict(val_fraction=0.1, test_fraction=0.2, img_size=4, augment="none", num_workers=0)
    dm = ImageCSVDataModule(str(csv), stratified=True, **options)
    dm.setup()
    assert _split_labels(dm) == {"train": [28, 14, 7], "val": [4, 2, 1], "test": [8, 4, 2]}

    def members(seed: int, stratified: bool = True) -> list[list[int]]:
        dm = ImageCSVDataModule(str(csv), stratified=stratified, seed=seed, **options)
        dm.setup()
        return [dm.datasets[split].dataset.indices for split in ("train", "val", "test")]

    first = members(0)
    assert members(0) == first and members(1) != first
    assert sorted(index for part in first for index in part) == list(range(70))  # disjoint, every row used
    plain = ImageCSVDataModule(str(csv), stratified=False, seed=0, **options)
    plain.setup()
    sizes = {split: sum(count) for split, count in _split_labels(plain).items()}
    assert sizes == {"train": 49, "val": 7, "test": 14}  # the same fractions of all rows, not of each class


def test_split_column_gives_the_splits_and_val_is_split_off_train_without_val_rows(tmp_path):
    rows = [(f"img/{i}.png", "ab"[i % 2], split) for i, split in enumerate(["train"] * 8 + ["val"] * 2 + ["test"] * 3)]
    for i in range(13):
        _image(tmp_path / "img" / f"{i}.png", i * 10, size=(4, 4))
    dm = ImageCSVDataModule(str(_csv(tmp_path / "s.csv", rows, "path,label,split")), img_size=4, num_workers=0)
    dm.setup()
    assert {split: dm.datasets[split].dataset.indices for split in dm.datasets} == {
        "train": list(range(8)),
        "val": [8, 9],
        "test": [10, 11, 12],
    }
    no_val = [row for row in rows if row[2] != "val"]
    dm = ImageCSVDataModule(str(_csv(tmp_path / "t.csv", no_val, "path,label,split")), img_size=4, val_fraction=0.25)
    dm.setup()
    sizes = {split: len(dataset) for split, dataset in dm.datasets.items()}
    assert sizes == {"train": 6, "val": 2, "test": 3}
    assert set(dm.datasets["train"].dataset.indices) | set(dm.datasets["val"].dataset.indices) == set(range(8))

    only_train = [(path, label, "train") for path, label, _ in rows]
    dm = ImageCSVDataModule(str(_csv(tmp_path / "u.csv", only_train, "path,label,split")), img_size=4)
    dm.setup()
    with pytest.raises(RuntimeError, match=r"u\.csv has no 'test' rows"):
        dm.test_dataloader()


def test_balanced_sampler_draws_classes_about_uniformly(tmp_path):
    csv = _dataset(tmp_path, {"a": 60, "b": 30, "c": 10})
    dm = ImageCSVDataModule(
        str(csv), balanced_sampler=True, val_fraction=0.0, test_fraction=0.0, img_size=4, num_workers=0, batch_size=10
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, ResumableLoader) and isinstance(loader.sampler, BalancedSampler) and len(loader) == 10
    targets = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)  # the training rows, in CSV order
    draws = []
    for seed in range(30):  # 30 epochs of 100 draws: 1000 per class expected, standard deviation about 26
        loader.sampler.set_epoch(seed)
        draws += list(loader.sampler)
    counts = torch.bincount(targets[draws], minlength=3)
    assert (counts - 1000).abs().max() < 150, counts  # an unweighted draw would give 1800, 900, 300

    torch.manual_seed(0)
    _, y = _all(loader)  # the loader's batches are those rows' labels
    loader.sampler.set_epoch(loader.state_dict()["seed"])
    assert torch.equal(y, targets[list(loader.sampler)])


def test_balanced_epoch_resumes_from_its_checkpointed_position(tmp_path):
    """The sampler follows the epoch seed ResumableLoader saves: a loader restored from the state after 3 batches
    yields exactly the uninterrupted epoch's remaining batches."""
    csv = _dataset(tmp_path, {"a": 30, "b": 10})
    options = dict(balanced_sampler=True, val_fraction=0.0, test_fraction=0.0, img_size=4, num_workers=0)
    dm = ImageCSVDataModule(str(csv), batch_size=8, **options)
    dm.setup("fit")
    loader = dm.train_dataloader()
    torch.manual_seed(0)
    batches = iter(loader)
    for _ in range(3):
        next(batches)
    state = loader.state_dict()
    rest = list(batches)

    resumed_dm = ImageCSVDataModule(str(csv), batch_size=8, **options)
    resumed_dm.setup("fit")
    resumed = resumed_dm.train_dataloader()
    resumed.load_state_dict(state)
    torch.manual_seed(123)  # what the global generator holds does not matter: the seed comes from the state
    again = list(resumed)
    assert len(again) == len(rest) == 2
    for (x, y), (x2, y2) in zip(rest, again, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_balanced_sampler_under_ddp_is_wrapped_not_replaced(tmp_path, monkeypatch):
    """Lightning swaps a RandomSampler for a plain DistributedSampler (no weights); under DDP the datamodule gives a
    WeightedRandomSampler seeded by `seed`, which Lightning wraps, and every rank draws the same indices to shard."""
    csv = _dataset(tmp_path, {"a": 12, "b": 4})
    single = _loader(csv)
    assert type(_get_distributed_sampler(single, True, 0, num_replicas=2, rank=0)) is DistributedSampler
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)
    rank0, rank1 = _loader(csv), _loader(csv)
    assert isinstance(rank0.sampler, WeightedRandomSampler) and not isinstance(rank0, ResumableLoader)
    assert isinstance(_get_distributed_sampler(rank0, True, 0, num_replicas=2, rank=0), DistributedSamplerWrapper)
    assert list(rank0.sampler) == list(rank1.sampler)


def _loader(csv: Path):
    options = dict(val_fraction=0.0, test_fraction=0.0, img_size=4, num_workers=0)
    dm = ImageCSVDataModule(str(csv), balanced_sampler=True, **options)
    dm.setup("fit")
    return dm.train_dataloader()


def test_missing_files_are_named_with_their_rows_before_training(tmp_path):
    csv = _dataset(tmp_path, {"a": 4, "b": 4})
    for name in ("a2", "b1"):
        (tmp_path / "img" / f"{name}.png").unlink()
    dm = ImageCSVDataModule(str(csv), img_size=4, num_workers=0)
    model = zoo.create_model("cnn_digits", in_channels=3, img_size=4, num_classes=2)
    trainer = quiet_trainer(max_steps=2)
    with pytest.raises(FileNotFoundError) as error:
        trainer.fit(model, dm)
    assert trainer.global_step == 0
    message = str(error.value)
    assert str(csv) in message and "2 image file(s)" in message
    assert f"data row 3: {tmp_path / 'img' / 'a2.png'}" in message
    assert f"data row 6: {tmp_path / 'img' / 'b1.png'}" in message

    for name in ("a0", "a1", "a3", "b2", "b3"):
        (tmp_path / "img" / f"{name}.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"7 image file\(s\).*data row 6: [^;]*b1\.png; and 2 more; rows"):
        ImageCSVDataModule(str(csv)).num_classes  # noqa: B018


@pytest.mark.parametrize(
    ("content", "options", "match"),
    [
        ("file,label\nx.png,a\n", {}, r"no column 'path'; its columns are \['file', 'label'\]"),
        ("path,class\nx.png,a\n", {}, r"no column 'label'; its columns are \['path', 'class'\]"),
        ("path,label\nx.png,a\n", {"image_column": "img", "label_column": "y"}, r"no column 'img' or 'y'"),
        ("path,label\nx.png,a\nx.png,\n", {}, r"column 'label' is empty in data row\(s\) 2"),
        ("path,label\nx.png,0.5\nx.png,1\n", {}, r"holds 0.5 in data row 1; labels are strings or integers"),
        ("path,label\nx.png,a\nx.png,a\n", {}, r"holds 1 label\(s\) \['a'\]; a classifier needs at least two"),
        ("path,label,split\nx.png,a,train\nx.png,b,valid\n", {}, r"holds \['valid'\] in data row\(s\) 2"),
        ("path,label,split\nx.png,a,val\nx.png,b,test\n", {}, r"no row has split 'train'"),
        ("path,label\n", {}, r"has a header \(path, label\) but no rows"),
    ],
)
def test_bad_csv_files_are_named(tmp_path, content, options, match):
    _image(tmp_path / "x.png", 0)
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(ValueError, match=match) as error:
        ImageCSVDataModule(str(tmp_path / "bad.csv"), **options).setup()
    assert str(tmp_path / "bad.csv") in str(error.value)


def test_bad_fractions_fail_at_construction(tmp_path):
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction < 1"):
        ImageCSVDataModule(str(tmp_path / "x.csv"), val_fraction=0.5, test_fraction=0.5)


def test_a_cnn_trains_from_the_csv_and_saves_its_preprocessing(tmp_path):
    csv = _dataset(tmp_path, {"blue": 12, "purple": 12})  # two colours: separable within a few steps
    options = dict(img_size=8, batch_size=8, val_fraction=0.25, test_fraction=0.0, num_workers=0)
    dm = ImageCSVDataModule(str(csv), stratified=True, balanced_sampler=True, augment="color", **options)
    L.seed_everything(0, verbose=False)
    model = zoo.create_model("cnn_digits", in_channels=3, img_size=8, num_classes=dm.num_classes)
    trainer = quiet_trainer(max_epochs=6)
    trainer.fit(model, dm)
    assert trainer.global_step == 6 * 3  # 18 training rows, batches of 8
    assert trainer.callback_metrics["val/acc"] == 1.0
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=True)
    assert checkpoint["ImageCSVDataModule"]["preprocessing"]["classes"] == ["blue", "purple"]


def test_zoo_cli_links_the_csv_data_into_the_model(tmp_path):
    csv = _dataset(tmp_path, {"a": 6, "b": 6, "c": 6})
    data = ["--data", "ImageCSV", f"--data.csv_path={csv}", "--data.img_size=8", "--data.num_workers=0"]
    cli = zoo_main(["fit", "--model", "cnn_digits", *data, "--trainer.fast_dev_run=1", *QUIET])
    assert (cli.model.num_classes, cli.model.in_channels, cli.model.img_size) == (3, 3, (8, 8))
    assert cli.trainer.state.finished


@pytest.mark.slow
def test_a_balanced_run_resumed_mid_epoch_equals_the_uninterrupted_one(tmp_path):
    """Through Lightning and ExactResume: a run resumed from a mid-epoch checkpoint trains on the same balanced
    batches (colour jitter and dropout in the main process) and ends with the same weights."""
    from callbacks import ExactResume

    csv = _dataset(tmp_path, {"a": 12, "b": 4})  # 4 batches of 4 per epoch

    def run(ckpt_path: str | None = None, **trainer_options) -> tuple[L.LightningModule, list[list[int]]]:
        L.seed_everything(0, verbose=False)
        options = dict(img_size=8, batch_size=4, val_fraction=0.0, test_fraction=0.0, num_workers=0)
        dm = ImageCSVDataModule(str(csv), balanced_sampler=True, augment="color", **options)
        model = zoo.create_model("cnn_digits", in_channels=3, img_size=8, num_classes=2, dropout=0.2)
        seen: list[list[int]] = []

        class Record(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                seen.append(batch[1].tolist())

        callbacks = [ExactResume(), Record(), *trainer_options.pop("callbacks", [])]
        trainer = quiet_trainer(max_epochs=2, limit_val_batches=0, callbacks=callbacks, **trainer_options)
        trainer.fit(model, dm, ckpt_path=ckpt_path)
        return model, seen

    every_6 = L.pytorch.callbacks.ModelCheckpoint(tmp_path / "ckpt", "mid", every_n_train_steps=6, save_top_k=-1)
    reference, batches = run(callbacks=[every_6], enable_checkpointing=True)
    resumed, resumed_batches = run(ckpt_path=str(tmp_path / "ckpt" / "mid.ckpt"))
    assert len(batches) == 8 and resumed_batches == batches[6:]
    for name, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
