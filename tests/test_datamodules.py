"""Datamodules read files written here in the real on-disk formats, through torchvision's loading code."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import (
    CIFAR10DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    build_augmentation,
    get_datamodule_class,
)
from datamodules.cifar import CIFAR10_CLASSES
from tests.conftest import make_mnist


def _all_batches(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


def _unnormalize(x: torch.Tensor, dm) -> torch.Tensor:
    mean, std = torch.tensor(dm.mean).view(1, -1, 1, 1), torch.tensor(dm.std).view(1, -1, 1, 1)
    return ((x * std + mean) * 255).round()


# --- MNIST -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("folder", ["MNIST/raw", "."])
def test_mnist_reads_idx_files(tmp_path, folder):
    """Gzipped IDX files in torchvision's layout or flat in data_dir; pixels and labels come back exactly."""
    arrays = make_mnist(tmp_path, n_train=100, n_test=30, folder=folder)
    dm = MNISTDataModule(data_dir=str(tmp_path), batch_size=16, val_fraction=0.2, download=False)
    dm.prepare_data()
    dm.setup("fit"), dm.setup("test")
    assert (dm.num_classes, dm.in_channels, dm.img_size) == (10, 1, (28, 28))
    assert len(dm.datasets["train"]) == 80 and len(dm.datasets["val"]) == 20
    x, y = _all_batches(dm.test_dataloader())
    images, labels = arrays["t10k"]
    assert x.shape == (30, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(y, torch.from_numpy(labels).long())
    torch.testing.assert_close(_unnormalize(x, dm)[:, 0], torch.from_numpy(images).float())


def test_missing_mnist_names_files_and_folder(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(FileNotFoundError) as error:
        dm.prepare_data()
    message = str(error.value)
    assert "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message


def test_fashion_mnist_uses_its_own_folder(tmp_path):
    make_mnist(tmp_path, n_train=20, n_test=10, folder="FashionMNIST/raw")
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), download=False)
    dm.prepare_data()
    dm.setup("test")
    assert len(dm.datasets["test"]) == 10 and dm.hflip


def test_split_is_deterministic_per_seed(mnist_dir):
    def val_targets(seed):
        dm = MNISTDataModule(data_dir=str(mnist_dir), seed=seed, download=False)
        dm.setup("fit")
        return dm.datasets["val"].images

    assert torch.equal(val_targets(1), val_targets(1))
    assert not torch.equal(val_targets(1), val_targets(2))


# --- CIFAR-10 ----------------------------------------------------------------------------------------------------
def _cifar_arrays(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).tolist()


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def _write_cifar_batches(root: Path) -> dict:
    """The python release: five data batches and a test batch, each a pickled dict of row-major CHW bytes."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    written = {}
    for index, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        images, labels = _cifar_arrays(8, index)
        rows = images.transpose(0, 3, 1, 2).reshape(8, -1)  # (N, H, W, C) -> (N, C*H*W) as in the release
        with open(folder / name, "wb") as handle:
            # The release was pickled by Python 2, whose str keys load as str under encoding="latin1".
            pickle.dump({"data": rows, "labels": labels, "batch_label": name}, handle, protocol=2)
        written[name] = (images, labels)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": list(CIFAR10_CLASSES)}, handle, protocol=2)
    return written


def test_cifar10_reads_pickled_batches(tmp_path):
    written = _write_cifar_batches(tmp_path)

    dm = CIFAR10DataModule(data_dir=str(tmp_path), batch_size=5, val_fraction=0.25, download=False)
    dm.prepare_data()
    dm.setup("fit"), dm.setup("test")
    assert len(dm.datasets["train"]) == 30 and len(dm.datasets["val"]) == 10
    x, y = _all_batches(dm.test_dataloader())
    images, labels = written["test_batch"]
    assert y.tolist() == labels
    torch.testing.assert_close(_unnormalize(x, dm), torch.from_numpy(images).permute(0, 3, 1, 2).float())


@pytest.mark.parametrize("layout", ["folder", "tarball"])
def test_cifar10_reads_image_folders_and_tarballs(tmp_path, layout):
    """PNG files are lossless, so the decoded pixels equal the written ones."""
    images, labels = _cifar_arrays(20, 0)
    root = tmp_path / "tree"
    for split in ("train", "test"):
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            _write_png(root / split / CIFAR10_CLASSES[label] / f"{index:04d}.png", image)
    if layout == "tarball":
        data_dir = tmp_path / "tarballs"
        data_dir.mkdir()
        for split in ("train", "test"):
            with tarfile.open(data_dir / f"cifar10-jpeg-{split}.tar.gz", "w:gz") as archive:
                archive.add(root / split, arcname=split)
    else:
        data_dir = root
    dm = CIFAR10DataModule(data_dir=str(data_dir), batch_size=8, download=False)
    dm.prepare_data()
    dm.setup("test")
    x, y = _all_batches(dm.test_dataloader())
    order = sorted(range(20), key=lambda i: (labels[i], f"{i:04d}"))  # class folder, then file name
    assert y.tolist() == [labels[i] for i in order]
    torch.testing.assert_close(_unnormalize(x, dm), torch.from_numpy(images[order]).permute(0, 3, 1, 2).float())


def test_corrupt_cifar_batch_is_named(tmp_path):
    _write_cifar_batches(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="data_batch_3"):
        CIFAR10DataModule(data_dir=str(tmp_path), download=False).setup("fit")


def test_corrupt_cifar_image_is_named(tmp_path):
    images, _ = _cifar_arrays(2, 0)
    for split in ("train", "test"):
        _write_png(tmp_path / split / "cat" / "0000.png", images[0])
    (tmp_path / "test" / "cat" / "0001.png").write_bytes(b"not a png")
    dm = CIFAR10DataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(ValueError, match=r"test/cat/0001\.png"):
        dm.setup("test")


def test_missing_cifar_lists_every_accepted_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*train/<class>.*cifar10-jpeg-train\.tar\.gz"):
        CIFAR10DataModule(data_dir=str(tmp_path), download=False).prepare_data()


def test_cifar10_shared_jpeg_tarball(shared_data):
    dm = CIFAR10DataModule(data_dir=str(shared_data), download=False)
    dm.setup("test")
    x, y = dm.datasets["test"].images, dm.datasets["test"].targets
    assert x.shape == (10_000, 3, 32, 32) and torch.equal(y.bincount(), torch.full((10,), 1000))


# --- ImageFolder ---------------------------------------------------------------------------------------------------
def _write_tree(root: Path, classes: tuple[str, ...], per_class: int, size: tuple[int, int] = (20, 24)) -> None:
    rng = np.random.default_rng(0)
    for name in classes:
        for index in range(per_class):
            _write_png(root / name / f"{index}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def test_image_folder_pool_is_split_into_train_val_test(tmp_path):
    _write_tree(tmp_path, ("ant", "bee", "cow"), per_class=10)
    dm = ImageFolderDataModule(data_dir=str(tmp_path), img_size=16, batch_size=4, val_fraction=0.2, num_workers=0)
    assert dm.num_classes == 3 and dm.classes == ["ant", "bee", "cow"]
    dm.setup()
    sizes = {split: len(ds) for split, ds in dm.datasets.items()}
    assert sizes == {"train": 22, "val": 5, "test": 3}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_image_folder_split_folders_and_grey(tmp_path):
    for split in ("train", "val", "test"):
        _write_tree(tmp_path / split, ("a", "b"), per_class=3)
    dm = ImageFolderDataModule(
        data_dir=str(tmp_path), img_size=(8, 12), in_channels=1, mean=(0.5,), std=(0.5,), num_workers=0
    )
    dm.setup()
    assert {split: len(ds) for split, ds in dm.datasets.items()} == {"train": 6, "val": 6, "test": 6}
    x, _ = next(iter(dm.val_dataloader()))
    assert x.shape == (6, 1, 8, 12)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="one sub-folder per class"):
        ImageFolderDataModule(data_dir=str(tmp_path / "missing")).num_classes  # noqa: B018
    with pytest.raises(ValueError, match="mean and std need 3 values"):
        ImageFolderDataModule(data_dir=str(tmp_path), mean=(0.5,))
    _write_tree(tmp_path, ("a", "b"), per_class=2)
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG broken")
    dm = ImageFolderDataModule(data_dir=str(tmp_path), img_size=8, val_fraction=0.0, test_fraction=0.01, num_workers=0)
    dm.setup()
    with pytest.raises(ValueError, match=r"a/broken\.png"):
        list(dm.train_dataloader())


# --- Digits and augmentation ----------------------------------------------------------------------------------------
def test_digits_is_embedded_and_split_without_overlap():
    dm = DigitsDataModule(batch_size=32)
    dm.setup()
    sizes = [len(dm.datasets[split]) for split in ("train", "val", "test")]
    assert sum(sizes) == 1797 and sizes[2] == round(1797 * 0.2)
    rows = {split: {tuple(image.flatten().tolist()) for image in dm.datasets[split].images} for split in dm.datasets}
    # Digits has a few duplicate images; the splits must not share more than those.
    assert len(rows["test"] & rows["train"]) < 10
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 8, 8) and abs(float(x.mean())) < 0.3


@pytest.mark.parametrize("name", ["standard", "autoaugment", "randaugment", "trivialaugment"])
@pytest.mark.parametrize("channels", [1, 3])
def test_augmentation_presets_keep_shape_and_dtype(name, channels):
    transform = build_augmentation(name, (32, 32), hflip=True)
    image = torch.randint(0, 256, (channels, 32, 32), dtype=torch.uint8)
    out = transform(image)
    assert out.shape == image.shape and out.dtype == torch.uint8


def test_augmentation_applies_per_sample_in_the_loader(mnist_dir):
    dm = MNISTDataModule(data_dir=str(mnist_dir), augment="standard", num_workers=0, download=False)
    dm.setup("fit")
    plain = dm.datasets["train"].images[:4]
    x, _ = dm.datasets["train"].__getitems__([0, 1, 2, 3])
    assert not torch.equal(_unnormalize(x, dm), plain.float())
    assert build_augmentation("none", (8, 8)) is None
    with pytest.raises(ValueError, match="Unknown augmentation"):
        build_augmentation("cutout", (8, 8))


def test_datamodule_names_and_suggestions():
    assert get_datamodule_class("MNIST") is MNISTDataModule
    assert get_datamodule_class("CIFAR10DataModule") is CIFAR10DataModule
    with pytest.raises(ValueError, match="Did you mean MNIST"):
        get_datamodule_class("MNSIT")


def test_loader_settings():
    dm = DigitsDataModule(num_workers=0)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.num_workers == 0 and not loader.pin_memory
    assert DigitsDataModule(augment="standard").default_num_workers() >= 1
    with pytest.raises(RuntimeError, match="no 'test' split"):
        dm.test_dataloader()
    buffer = io.BytesIO()
    torch.save(dict(dm.hparams), buffer)  # primitive hyperparameters only
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["batch_size"] == 64
