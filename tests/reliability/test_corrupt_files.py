"""Broken data files are named, with what was expected, before any training; a good copy put back is used."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from datamodules import MNISTDataModule
from tests.conftest import make_mnist

RAW = Path("MNIST/raw")


@pytest.fixture
def archives(tmp_path: Path) -> Path:
    """A data_dir holding only the four gzipped MNIST files, as distributed."""
    make_mnist(tmp_path)
    for unpacked in (tmp_path / RAW).glob("*-ubyte"):
        unpacked.unlink()
    return tmp_path


def _setup(data_dir: Path) -> MNISTDataModule:
    data = MNISTDataModule(data_dir, batch_size=16)
    data.prepare_data()
    data.setup("fit")
    return data


def test_a_truncated_archive_is_named_and_leaves_no_partial_file(archives: Path):
    archive = archives / RAW / "train-images-idx3-ubyte.gz"
    good = archive.read_bytes()
    archive.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz cannot be decompressed \(EOFError"):
        _setup(archives)
    assert not (archives / RAW / "train-images-idx3-ubyte").exists()
    archive.write_bytes(good)  # the good copy put back is used
    assert len(_setup(archives).datasets["train"]) > 0


def test_a_garbage_archive_is_named(archives: Path):
    (archives / RAW / "t10k-labels-idx1-ubyte.gz").write_bytes(b"<html>not found</html>")
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz cannot be decompressed \(BadGzipFile"):
        _setup(archives)


def test_an_empty_unpacked_file_is_replaced_from_its_archive(archives: Path):
    _setup(archives)
    unpacked = archives / RAW / "train-labels-idx1-ubyte"
    unpacked.write_bytes(b"")  # an extraction cut short in an earlier run
    assert len(_setup(archives).datasets["train"]) > 0
    assert unpacked.stat().st_size > 0


def test_an_unpacked_file_without_archive_is_named_with_what_was_expected(archives: Path):
    _setup(archives)
    (archives / RAW / "t10k-images-idx3-ubyte.gz").unlink()
    unpacked = archives / RAW / "t10k-images-idx3-ubyte"
    unpacked.write_bytes(unpacked.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte holds \d+ bytes, but its header .* truncated"):
        _setup(archives)


def test_swapped_test_files_are_found_at_setup_before_training(archives: Path):
    raw = archives / RAW
    images, labels = raw / "t10k-images-idx3-ubyte.gz", raw / "t10k-labels-idx1-ubyte.gz"
    shutil.move(images, raw / "tmp.gz")
    shutil.move(labels, images)
    shutil.move(raw / "tmp.gz", labels)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte is not an IDX file of 3-d unsigned bytes"):
        _setup(archives)  # setup("fit") checks the test files too


def test_test_labels_of_another_size_are_found_at_setup(archives: Path):
    labels = archives / RAW / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(labels) as handle:
        payload = bytearray(handle.read())
    payload[4:8] = (len(payload) - 9).to_bytes(4, "big")  # one label fewer
    with gzip.open(labels, "wb") as handle:
        handle.write(bytes(payload[:-1]))
    with pytest.raises(
        ValueError, match=r"t10k-images-idx3-ubyte holds 64 images but .*t10k-labels-idx1-ubyte holds 63"
    ):
        _setup(archives)


def test_a_truncated_cifar_tarball_is_named(tmp_path: Path):
    import io
    import tarfile

    from PIL import Image

    from datamodules import CIFAR10DataModule

    for split in ("train", "test"):
        with tarfile.open(tmp_path / f"cifar10-jpeg-{split}.tar.gz", "w:gz") as archive:
            for index in range(40):
                buffer = io.BytesIO()
                Image.effect_noise((32, 32), 64 + index).convert("RGB").save(buffer, format="JPEG")
                member = tarfile.TarInfo(f"{split}/{('cat', 'dog')[index % 2]}/{index}.jpg")
                member.size = buffer.tell()
                archive.addfile(member, io.BytesIO(buffer.getvalue()))
    data = CIFAR10DataModule(tmp_path, batch_size=8, val_fraction=0.25)
    data.setup("fit")
    assert len(data.datasets["train"]) + len(data.datasets["val"]) == 40
    archive = tmp_path / "cifar10-jpeg-train.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(ValueError, match=r"cifar10-jpeg-train\.tar\.gz cannot be read .*truncated or not a"):
        CIFAR10DataModule(tmp_path, batch_size=8).setup("fit")
