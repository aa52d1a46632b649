"""Image folders and CSV files that would train to a meaningless number, or fail deep inside pandas: each is refused
before training, naming the folder or the file (and the column)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules import CSVRegressionDataModule, ImageFolderDataModule, TimeSeriesDataModule


def _images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(np.full((8, 8, 3), index * 20, dtype=np.uint8)).save(folder / f"{index}.png")


def _image_data(root: Path) -> ImageFolderDataModule:
    data = ImageFolderDataModule(data_dir=str(root), img_size=8, num_workers=0)
    data.setup("fit")
    return data


@pytest.mark.parametrize("layout", ["pool", "splits"])
def test_an_image_folder_of_one_class_is_refused_naming_the_folder(tmp_path: Path, layout: str):
    root = tmp_path / "train" if layout == "splits" else tmp_path
    _images(root / "cat", 6)
    with pytest.raises(
        ValueError, match=rf"{root}/ holds 1 class folder\(s\) \['cat'\]; a classifier needs at least two"
    ):
        _image_data(tmp_path)
    _images(root / "dog", 6)
    assert _image_data(tmp_path).num_classes == 2


def test_an_image_folder_of_no_class_is_refused_naming_the_folder(tmp_path: Path):
    (tmp_path / "loose.png").write_bytes(b"")
    with pytest.raises(ValueError, match=rf"{tmp_path}/ holds 0 class folder\(s\) \[\]"):
        _image_data(tmp_path)


@pytest.mark.parametrize("split", [None, "train", "test"])
def test_an_empty_class_folder_is_named_with_its_root(tmp_path: Path, split: str | None):
    base = tmp_path if split is None else tmp_path / "train"
    for name in ("cat", "dog"):
        _images(base / name, 6)
        if split is not None:
            _images(tmp_path / "test" / name, 2)
    root = base if split in (None, "train") else tmp_path / "test"
    for stale in (root / "dog").iterdir():
        stale.unlink()
    (root / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=rf"{root}/ has class folders without images: \['dog'\]"):
        _image_data(tmp_path)


def _series(path: Path, values: list[float]) -> TimeSeriesDataModule:
    path.write_text("t,y\n" + "".join(f"{step},{value!r}\n" for step, value in enumerate(values)))
    data = TimeSeriesDataModule(csv_path=str(path), time_column="t", input_size=8, horizon=2)
    data.setup("fit")
    return data


@pytest.mark.parametrize("value", [1e200, -1e39, float("inf")])
def test_a_csv_value_beyond_float32_is_named_with_its_column_and_row(tmp_path: Path, value: float):
    path = tmp_path / "series.csv"
    values = [float(np.sin(step / 3)) for step in range(60)]
    values[17] = value
    expected = f"column 'y' of {path} holds {value:g} (data row 18), beyond the float32 range"
    with pytest.raises(ValueError, match=re.escape(expected)):
        _series(path, values)
    values[17] = 1e30  # large, but within float32: scaled like any other value
    assert np.isfinite(_series(path, values).target_std).all()


def test_a_regression_csv_value_beyond_float32_is_named(tmp_path: Path):
    path = tmp_path / "houses.csv"
    path.write_text("area,price\n" + "".join(f"{area},{area * 3 if area != 40 else 1e200}\n" for area in range(30, 70)))
    with pytest.raises(ValueError, match=rf"column 'price' of {path} holds 1e\+200 \(data row 11\)"):
        CSVRegressionDataModule(str(path), targets=["price"])


READERS = {
    "forecast": lambda path: TimeSeriesDataModule(csv_path=str(path), input_size=8, horizon=2).setup("fit"),
    "regression": lambda path: CSVRegressionDataModule(str(path), targets=["y"]),
}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"is empty; a CSV file needs a header row"),
        (b"t,y\n", r"has a header \(t, y\) but no rows of values"),
        (b"t,y\n1,2\n2,\xff\xfe\n", r"is not UTF-8 text \(byte 0xff on line 3\); save it as UTF-8 CSV"),
        (b'"t,y\n1,2\n', r"is not a readable CSV file"),
    ],
)
def test_empty_header_only_and_non_utf8_csv_files_are_named(tmp_path: Path, reader: str, content: bytes, message):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{path} {message}"):
        READERS[reader](path)
