"""TimeSeriesDataModule: windows, the chronological split and the scaler, checked on series whose values are their
own positions, so any value that crosses a split boundary shows up by its number."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules import TimeSeriesDataModule

N, L, H = 200, 16, 4  # 120 training steps, then 40 validation and 40 test steps
N_TRAIN, N_VAL_END = 120, 160


def _positions(n: int = N, offset: float = 0.0) -> np.ndarray:
    """Column 0: the position; column 1 (a covariate): 1000 + the position."""
    steps = np.arange(n, dtype=np.float64) + offset
    return np.stack([steps, 1000 + steps], axis=1)


def _datamodule(series, **kwargs) -> TimeSeriesDataModule:
    kwargs = dict(input_size=L, horizon=H, val_fraction=0.2, test_fraction=0.2, **kwargs)
    dm = TimeSeriesDataModule(series=series, **kwargs)
    dm.setup()
    return dm


def _windows(dm: TimeSeriesDataModule, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every window of a split in original units: inputs (N, L, F), targets (N, H, T), observed (N, H, T)."""
    dataset = dm.datasets[split]
    batch = dataset.__getitems__(list(range(len(dataset))))
    center, scale = dm._data["center"], dm._data["scale"]
    inputs = batch.inputs.double() * torch.as_tensor(scale) + torch.as_tensor(center)
    # float32 storage: positions come back within 1e-4, so round them to whole steps again
    return inputs.round(decimals=2), dm.inverse_transform(batch.targets.double()).round(decimals=2), batch.observed


def test_windows_are_consecutive_steps_context_then_horizon():
    dm = _datamodule(_positions(), target_columns=["x0"], covariate_columns=["x1"], scaler="none")
    assert (dm.in_features, dm.out_features) == (2, 1)
    for split, first_origin, count in (("train", L, N_TRAIN - L - H + 1), ("val", N_TRAIN, 40 - H + 1)):
        inputs, targets, observed = _windows(dm, split)
        assert len(inputs) == count and observed.all()
        origins = first_origin + torch.arange(count, dtype=torch.float64)
        torch.testing.assert_close(inputs[:, :, 0], origins[:, None] + torch.arange(-L, 0))
        torch.testing.assert_close(inputs[:, :, 1], 1000 + inputs[:, :, 0])  # the covariate rides along
        torch.testing.assert_close(targets[:, :, 0], origins[:, None] + torch.arange(H))


def test_no_value_after_the_training_span_reaches_training_windows_or_the_scaler():
    dm = _datamodule(_positions(), target_columns=["x0"], covariate_columns=["x1"])
    inputs, targets, _ = _windows(dm, "train")
    assert inputs[..., 0].max() < N_TRAIN and targets.max() < N_TRAIN  # positions 120+ never seen in training
    train = np.arange(N_TRAIN, dtype=np.float64)
    np.testing.assert_allclose(dm._data["center"], [train.mean(), 1000 + train.mean()])
    np.testing.assert_allclose(dm._data["scale"], [train.std(), train.std()])
    assert dm.target_mean == pytest.approx([train.mean()]) and dm.mase_scale == pytest.approx([1.0])
    # Whatever the later spans hold (here: huge values and gaps), training windows and the scaler stay the same.
    changed = _positions()
    changed[N_TRAIN:] = 1e9
    changed[N_TRAIN + 5 :: 7] = np.nan
    other = _datamodule(changed, target_columns=["x0"], covariate_columns=["x1"])
    for split in ("train",):
        for part, same in zip(_windows(other, split), _windows(dm, split), strict=True):
            torch.testing.assert_close(part, same)
    np.testing.assert_array_equal(other._data["center"], dm._data["center"])
    np.testing.assert_array_equal(other._data["scale"], dm._data["scale"])
    assert other.mase_scale == dm.mase_scale


def test_evaluation_windows_forecast_their_own_span_from_the_past():
    dm = _datamodule(_positions(), scaler="minmax", stride=5)
    assert len(dm.datasets["train"]) == len(range(L, N_TRAIN - H + 1, 5))  # stride for training windows only
    for split, (low, high) in (("val", (N_TRAIN, N_VAL_END)), ("test", (N_VAL_END, N))):
        inputs, targets, _ = _windows(dm, split)
        assert targets[..., 0].min() == low and targets[..., 0].max() == high - 1
        assert (inputs[:, -1, 0] + 1 == targets[:, 0, 0]).all()  # the context ends right before each forecast
    test_inputs, _, _ = _windows(dm, "test")
    assert test_inputs[..., 0].min() == N_VAL_END - L  # the first test context is the end of validation: the past


def test_several_series_are_windowed_apart_and_split_each_in_time(tmp_path):
    frame = pd.DataFrame(
        {
            "id": ["a"] * 100 + ["b"] * 150,
            "t": list(range(100)) + list(range(150)),
            "y": np.concatenate([np.arange(100.0), 10_000 + np.arange(150.0)]),
        }
    )
    path = tmp_path / "two.csv"
    frame.to_csv(path, index=False)
    dm = TimeSeriesDataModule(
        csv_path=str(path), time_column="t", id_column="id", input_size=8, horizon=2, scaler="none"
    )
    dm.setup()
    assert dm.out_features == 1 and dm.target_names == ["y"]
    for split in ("train", "val", "test"):
        inputs, targets, _ = _windows(dm, split)
        whole = torch.cat([inputs[..., 0], targets[..., 0]], dim=1)  # (N, L + H)
        assert ((whole >= 10_000).all(1) | (whole < 10_000).all(1)).all()  # never across the two series
        assert (whole.diff(dim=1) == 1).all()
    _, train_targets, _ = _windows(dm, "train")
    # each series splits on its own: a trains on steps 0-69 (100 - 15 - 15), b on 0-105 (150 - 22 - 22)
    assert train_targets[train_targets < 10_000].max() == 69 and train_targets.max() == 10_000 + 105


def test_missing_values_are_counted_forward_filled_in_inputs_and_masked_in_targets(caplog):
    values = np.arange(N, dtype=np.float64)
    gaps = [30, 31, 130]
    values[gaps] = np.nan
    with caplog.at_level(logging.INFO):
        dm = _datamodule(values, scaler="none")
    assert dm.missing_counts == {"x0": 3}
    assert "3 missing values" in caplog.text and "x0: 3 of 200" in caplog.text
    inputs, targets, observed = _windows(dm, "train")
    origin = 32  # the window whose context ends with the gap at 30, 31
    index = origin - L
    assert inputs[index, -2:, 0].tolist() == [29.0, 29.0]  # filled with the last value before the gap
    window = _windows(dm, "train")
    first = 30 - L  # the window whose targets start at the gap
    assert (
        window[2][first, :, 0].tolist() == [False, False, True, True] and observed.sum() == observed.numel() - 8
    )  # 30 and 31 are each a target of 4 windows
    assert targets[first, 2:, 0].tolist() == [32.0, 33.0]
    filled = _datamodule(values, scaler="none", missing="ffill")
    assert _windows(filled, "train")[2].all() and _windows(filled, "train")[1][first, :2, 0].tolist() == [29.0, 29.0]


def test_named_statsmodels_series_read_without_network():
    dm = TimeSeriesDataModule("sunspots", input_size=32, horizon=8)
    assert dm.season_length == 11 and dm.in_features == 1 and dm.target_names == ["sunactivity"]
    dm.setup()
    assert {split: len(d) for split, d in dm.datasets.items()} == {"train": 178, "val": 39, "test": 39}
    co2 = TimeSeriesDataModule("co2", input_size=52, horizon=4)
    assert co2.season_length == 52 and co2.out_features == 1
    co2.setup()
    assert co2.missing_counts == {"co2": 59}


def test_bad_input_names_the_column_or_the_lengths(tmp_path):
    with pytest.raises(
        ValueError, match=r"40 steps: its training span \(24 steps.*input_size \+ horizon = 40 \(32 \+ 8\)"
    ):
        TimeSeriesDataModule(series=np.arange(40.0), input_size=32, horizon=8).setup()
    frame = pd.DataFrame({"t": range(100), "y": np.arange(100.0), "label": ["a", "b"] * 50})
    with pytest.raises(ValueError, match=r"column 'label' of the given series is not numeric \(dtype .*'a'"):
        TimeSeriesDataModule(series=frame, time_column="t", input_size=8, horizon=2).setup()
    frame["label"] = np.nan
    with pytest.raises(ValueError, match=r"column 'label' has no observed value at all"):
        TimeSeriesDataModule(series=frame, time_column="t", input_size=8, horizon=2).setup()
    frame = frame.drop(columns="label")
    late = frame.assign(z=np.where(np.arange(100) >= 80, 1.0, np.nan))
    with pytest.raises(ValueError, match=r"column 'z' has no observed value in the training span"):
        TimeSeriesDataModule(series=late, time_column="t", input_size=8, horizon=2).setup()
    shuffled = frame.iloc[[*range(50), 51, 50, *range(52, 100)]]
    path = tmp_path / "unsorted.csv"
    shuffled.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"time column 't' of .*unsorted.csv is not sorted.*50 at row 51 follows 51"):
        TimeSeriesDataModule(csv_path=str(path), time_column="t", input_size=8, horizon=2).setup()
    with pytest.raises(ValueError, match="no column 'date'"):
        TimeSeriesDataModule(csv_path=str(path), time_column="date").setup()
    with pytest.raises(ValueError, match="Unknown series 'sunspot'"):
        TimeSeriesDataModule("sunspot")
    with pytest.raises(ValueError, match="val_fraction and test_fraction"):
        TimeSeriesDataModule(val_fraction=0.5, test_fraction=0.5)
