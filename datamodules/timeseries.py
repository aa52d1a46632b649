"""Time-series forecasting data: sliding windows over one or several series, split in time, scaled on the past only.

A series is a table of steps (rows) and numeric columns: the *targets* (forecast) and optional *covariates* (inputs
only, known up to the forecast origin). A window is ``input_size`` steps of every column (the context) followed by
``horizon`` steps of the targets; its batch is a :class:`ForecastBatch` ``(inputs (B, L, F), targets (B, H, T),
observed (B, H, T))``, targets first among the ``F`` input columns.

What keeps the evaluation honest:

- **Chronological split** per series: the first ``1 - val_fraction - test_fraction`` of the steps train, then
  validation, then test. A training window lies wholly in the training span; a validation (test) window forecasts
  steps of the validation (test) span from the context just before them, which is the past at that origin.
- **Scaler fitted on the training span only** (per column, over every series).
- **Missing values**: inputs are forward-filled (only past values, so no later value leaks back); a gap before the
  first observation becomes the training mean. Missing targets are masked (``observed`` is False there) and count in
  neither loss nor metrics; windows with no observed target are dropped. The counts are reported when data is read.

>>> import numpy as np
>>> dm = TimeSeriesDataModule(series=np.arange(100.0), input_size=8, horizon=2, val_fraction=0.2, test_fraction=0.2)
>>> dm.setup("fit")
>>> batch = next(iter(dm.train_dataloader()))
>>> tuple(batch.inputs.shape[1:]), tuple(batch.targets.shape[1:]), len(dm.datasets["train"])
((8, 1), (2, 1), 51)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from datamodules.base import SavesPreprocessing, SplitLoaders, check_float32_range, make_loader, read_csv

if TYPE_CHECKING:  # imported where used: importing pandas costs every program that imports datamodules about 1 s
    import pandas as pd

ScalerName = Literal["standard", "minmax", "none"]
MissingName = Literal["mask", "ffill"]


class ForecastBatch(NamedTuple):
    """Context ``inputs`` ``(B, L, F)``, scaled ``targets`` ``(B, H, T)`` and their ``observed`` mask ``(B, H, T)``."""

    inputs: torch.Tensor
    targets: torch.Tensor
    observed: torch.Tensor


@dataclass(frozen=True)
class _NamedSeries:
    loader: Any  # () -> DataFrame with a "time" column
    targets: tuple[str, ...]
    season_length: int
    about: str


def _statsmodels_frame(name: str) -> pd.DataFrame:
    try:
        from statsmodels import datasets
    except ImportError as error:  # a declared dependency; a broken install should still say what is missing
        raise ModuleNotFoundError(
            "The named time series are statsmodels package data: `pip install statsmodels`"
        ) from error
    return getattr(datasets, name).load_pandas().data


def _sunspots() -> pd.DataFrame:
    import pandas as pd

    frame = _statsmodels_frame("sunspots")
    return pd.DataFrame({"time": frame["YEAR"].astype(int), "sunactivity": frame["SUNACTIVITY"]})


def _co2() -> pd.DataFrame:
    import pandas as pd

    frame = _statsmodels_frame("co2")
    return pd.DataFrame({"time": frame.index, "co2": frame["co2"].to_numpy()})


def _nile() -> pd.DataFrame:
    import pandas as pd

    frame = _statsmodels_frame("nile")
    return pd.DataFrame({"time": frame["year"].astype(int), "volume": frame["volume"]})


def _elnino() -> pd.DataFrame:
    import pandas as pd

    frame = _statsmodels_frame("elnino")
    months = frame.columns[1:]  # JAN..DEC: one row per year -> one row per month
    values = frame[months].to_numpy().reshape(-1)
    time = pd.date_range(f"{int(frame['YEAR'].iloc[0])}-01", periods=len(values), freq="MS")
    return pd.DataFrame({"time": time, "sst": values})


def _macrodata() -> pd.DataFrame:
    import pandas as pd

    frame = _statsmodels_frame("macrodata")
    time = pd.PeriodIndex.from_fields(year=frame["year"].astype(int), quarter=frame["quarter"].astype(int), freq="Q")
    return pd.concat([pd.DataFrame({"time": time.to_timestamp()}), frame.drop(columns=["year", "quarter"])], axis=1)


#: Real series shipped with statsmodels (no download): loader, default targets, season length.
NAMED_SERIES: dict[str, _NamedSeries] = {
    "sunspots": _NamedSeries(_sunspots, ("sunactivity",), 11, "yearly sunspot numbers 1700-2008 (11-year cycle)"),
    "co2": _NamedSeries(_co2, ("co2",), 52, "weekly Mauna Loa CO2 1958-2001, 59 weeks missing"),
    "nile": _NamedSeries(_nile, ("volume",), 1, "yearly Nile flow at Aswan 1871-1970"),
    "elnino": _NamedSeries(_elnino, ("sst",), 12, "monthly El Nino sea surface temperature 1950-2010"),
    "macrodata": _NamedSeries(_macrodata, ("realgdp",), 4, "quarterly US macroeconomic series 1959-2009"),
}


class WindowDataset(Dataset):
    """Windows over series stored end to end: ``values`` ``(N, F)`` and ``targets``/``observed`` ``(N, T)``.

    ``origins`` are the positions of each window's first forecast step; the context is the ``input_size`` steps
    before it. Batches are gathered in one indexing (``__getitems__``).
    """

    def __init__(
        self,
        values: torch.Tensor,
        targets: torch.Tensor,
        observed: torch.Tensor,
        origins: torch.Tensor,
        input_size: int,
        horizon: int,
    ) -> None:
        self.values, self.targets, self.observed, self.origins = values, targets, observed, origins
        self.context = torch.arange(-input_size, 0)
        self.ahead = torch.arange(horizon)

    def __len__(self) -> int:
        return len(self.origins)

    def __getitem__(self, index: int) -> ForecastBatch:
        batch = self.__getitems__([index])
        return ForecastBatch(*(part[0] for part in batch))

    def __getitems__(self, indices: Sequence[int]) -> ForecastBatch:
        origins = self.origins[torch.as_tensor(indices)].unsqueeze(1)  # (B, 1)
        past, future = origins + self.context, origins + self.ahead  # (B, L), (B, H)
        return ForecastBatch(self.values[past], self.targets[future], self.observed[future])


def _collate(batch: ForecastBatch | list[ForecastBatch]) -> ForecastBatch:
    if isinstance(batch, ForecastBatch):
        return batch
    return ForecastBatch(*(torch.stack(parts) for parts in zip(*batch, strict=True)))


class TimeSeriesDataModule(SavesPreprocessing, SplitLoaders, L.LightningDataModule):
    """Forecasting windows from a named statsmodels series, a CSV file, or an array / DataFrame.

    The sizes and statistics a forecaster needs (``input_size``, ``horizon``, ``in_features``, ``out_features``,
    ``target_mean``, ``target_std``, ``mase_scale``, ``season_length``) are attributes, linked into the model by the
    CLI; reading them reads the data once (no network).

    Args:
        dataset: a name of :data:`NAMED_SERIES` (``"sunspots"``, ``"co2"``, ...); ignored when ``csv_path`` or
            ``series`` is given.
        csv_path: a CSV file of one row per step (several series: stacked, told apart by ``id_column``).
        series: an array ``(T,)``/``(T, F)``, a list of them (several series), or a DataFrame (Python use).
        time_column: the column that orders the steps (must be sorted within each series); not a feature.
        id_column: the column naming the series of each row (several series in one table).
        target_columns: the columns to forecast; default every column but time and id.
        covariate_columns: further input columns (seen in the context, not forecast).
        input_size: context length ``L``.
        horizon: forecast length ``H``.
        stride: steps between the origins of training windows (validation and test use every origin).
        val_fraction: fraction of each series' steps, after the training span, that validates.
        test_fraction: fraction at the end of each series that tests.
        scaler: ``"standard"`` (mean/std), ``"minmax"`` (to [0, 1]) or ``"none"``; fitted on the training span.
        missing: what a missing target becomes: ``"mask"`` (left out of loss and metrics) or ``"ffill"`` (the last
            observed value, like the inputs).
        season_length: the period of seasonal naive; default the named series' (1 otherwise).
        batch_size: windows per batch.
        num_workers: loader workers (in-memory windows need none).
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
    """

    def __init__(
        self,
        dataset: str = "sunspots",
        csv_path: str | None = None,
        series: Any = None,
        time_column: str | None = None,
        id_column: str | None = None,
        target_columns: Sequence[str] | None = None,
        covariate_columns: Sequence[str] = (),
        input_size: int = 32,
        horizon: int = 8,
        stride: int = 1,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        scaler: ScalerName = "standard",
        missing: MissingName = "mask",
        season_length: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        if input_size < 1 or horizon < 1 or stride < 1 or batch_size < 1:
            raise ValueError(
                f"input_size, horizon, stride and batch_size must be positive, got {input_size}, {horizon}, "
                f"{stride}, {batch_size}"
            )
        if val_fraction <= 0 or test_fraction <= 0 or val_fraction + test_fraction >= 1:
            raise ValueError(
                f"val_fraction and test_fraction must be positive with a sum below 1, got {val_fraction}, "
                f"{test_fraction}"
            )
        if scaler not in ("standard", "minmax", "none"):
            raise ValueError(f"Unknown scaler {scaler!r}; choose 'standard', 'minmax' or 'none'.")
        if missing not in ("mask", "ffill"):
            raise ValueError(f"Unknown missing-value rule {missing!r}; choose 'mask' or 'ffill'.")
        if season_length is not None and season_length < 1:
            raise ValueError(f"season_length must be positive, got {season_length}")
        if series is None and csv_path is None and dataset not in NAMED_SERIES:
            raise ValueError(f"Unknown series {dataset!r}; named series: {', '.join(NAMED_SERIES)}")
        # An array or DataFrame is data, not a hyperparameter: checkpoints keep the other arguments.
        self.save_hyperparameters(ignore=["series"], logger=False)
        self.series = series
        self.input_size, self.horizon, self.stride = input_size, horizon, stride
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.datasets: dict[str, WindowDataset] = {}

    # --- reading and checking ----------------------------------------------------------------------------------
    @property
    def source(self) -> str:
        """What the data was read from, for messages."""
        if self.series is not None:
            return "the given series"
        return self.hparams.csv_path or f"statsmodels {self.hparams.dataset!r}"

    def read_frames(self) -> list[tuple[str, pd.DataFrame]]:
        """The raw tables, one per series, as ``(name, frame)``; time and id columns removed after their checks."""
        import pandas as pd

        hp = self.hparams
        time_column, id_column = hp.time_column, hp.id_column
        if self.series is not None:
            frame = self.series
            if not isinstance(frame, pd.DataFrame):
                arrays = list(frame) if isinstance(frame, list | tuple) else [frame]
                frames = []
                for index, array in enumerate(arrays):
                    array = np.asarray(array.cpu() if isinstance(array, torch.Tensor) else array)
                    array = array.reshape(len(array), -1) if array.ndim == 1 else array
                    if array.ndim != 2:
                        raise ValueError(f"series[{index}] must be (T,) or (T, F), got shape {array.shape}")
                    frames.append(pd.DataFrame(array, columns=[f"x{i}" for i in range(array.shape[1])]))
                return [(f"series[{i}]" if len(frames) > 1 else "series", f) for i, f in enumerate(frames)]
        elif hp.csv_path is not None:
            frame = read_csv(hp.csv_path)
        else:
            frame, time_column, id_column = NAMED_SERIES[hp.dataset].loader(), "time", None
        for column in (time_column, id_column):
            if column is not None and column not in frame.columns:
                raise ValueError(
                    f"{self.source} has no column {column!r}; columns: {', '.join(map(str, frame.columns))}"
                )
        groups = list(frame.groupby(id_column, sort=False)) if id_column else [(None, frame)]
        out = []
        for key, group in groups:
            name = f"series {key!r} of {self.source}" if id_column else self.source
            if time_column is not None:
                _check_sorted(group[time_column], time_column, name)
            out.append((name, group.drop(columns=[c for c in (time_column, id_column) if c]).reset_index(drop=True)))
        return out

    def _columns(self, frame: pd.DataFrame) -> tuple[list[str], list[str]]:
        hp = self.hparams
        if hp.target_columns is not None:
            targets = list(hp.target_columns)
        elif self.series is None and hp.csv_path is None:
            targets = list(NAMED_SERIES[hp.dataset].targets)
        else:
            targets = [c for c in frame.columns if c not in hp.covariate_columns]
        covariates = [c for c in hp.covariate_columns if c not in targets]
        if not targets:
            raise ValueError(f"{self.source}: no target column to forecast")
        missing = [c for c in targets + covariates if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{self.source} has no column {missing[0]!r}; columns: {', '.join(map(str, frame.columns))}"
            )
        return targets, covariates

    @cached_property
    def _data(self) -> dict[str, Any]:
        """Every series read, checked, split, scaled and windowed (once; the split datasets come from this)."""
        frames = self.read_frames()
        targets, covariates = self._columns(frames[0][1])
        columns = targets + covariates
        raw, bounds = [], []
        L, H = self.input_size, self.horizon
        for name, frame in frames:
            values = _numeric(frame, columns, name)  # (N, F) float64 with NaN
            n = len(values)
            n_test = max(H, round(n * self.hparams.test_fraction))
            n_val = max(H, round(n * self.hparams.val_fraction))
            n_train = n - n_val - n_test
            if n_train < L + H:
                raise ValueError(
                    f"{name} has {n} steps: its training span ({n_train} steps, before {n_val} validation and "
                    f"{n_test} test steps) is shorter than input_size + horizon = {L + H} ({L} + {H})"
                )
            raw.append(values)
            bounds.append((n_train, n_train + n_val, n))
        train_span = np.concatenate([values[:n_train] for values, (n_train, _, _) in zip(raw, bounds, strict=True)])
        for index, column in enumerate(columns):
            if np.isnan(train_span[:, index]).all():
                whole = np.concatenate([values[:, index] for values in raw])
                where = "at all (every value is NaN)" if np.isnan(whole).all() else "in the training span"
                raise ValueError(f"{self.source}: column {column!r} has no observed value {where}")
        center, scale = _fit_scaler(train_span, self.hparams.scaler)
        self._report_missing(raw, columns)
        parts, offset = {"values": [], "targets": [], "observed": []}, 0
        origins: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
        naive_abs, naive_count = np.zeros(len(targets)), np.zeros(len(targets))
        for values, (n_train, n_val_end, n) in zip(raw, bounds, strict=True):
            scaled = (values - center) / scale
            observed = ~np.isnan(scaled[:, : len(targets)])
            filled = _forward_fill(scaled)
            parts["values"].append(filled)
            parts["targets"].append(
                filled[:, : len(targets)]
                if self.hparams.missing == "ffill"
                else np.nan_to_num(scaled[:, : len(targets)])
            )
            parts["observed"].append(observed | (self.hparams.missing == "ffill"))
            spans = {
                "train": np.arange(L, n_train - H + 1, self.stride),
                "val": np.arange(n_train, n_val_end - H + 1),
                "test": np.arange(n_val_end, n - H + 1),
            }
            for split, starts in spans.items():
                has_target = np.array([parts["observed"][-1][s : s + H].any() for s in starts], dtype=bool)
                origins[split].append(starts[has_target] + offset)
            # MASE's denominator: the in-sample one-step naive error of the training span, in original units.
            diffs = np.abs(np.diff(values[:n_train, : len(targets)], axis=0))
            naive_abs += np.nansum(diffs, axis=0)
            naive_count += (~np.isnan(diffs)).sum(0)
            offset += n
        if (naive_count == 0).any() or (naive_abs == 0).any():
            column = targets[int(np.argmin(naive_abs * (naive_count > 0)))]
            raise ValueError(f"{self.source}: target {column!r} is constant in the training span, so MASE is undefined")
        tensors = {key: torch.as_tensor(np.concatenate(value)) for key, value in parts.items()}
        return {
            "targets": targets,
            "covariates": covariates,
            "values": tensors["values"].float(),
            "target_values": tensors["targets"].float(),
            "observed": tensors["observed"].bool(),
            "origins": {split: torch.as_tensor(np.concatenate(o)).long() for split, o in origins.items()},
            "center": center,
            "scale": scale,
            "mase_scale": naive_abs / naive_count,
            "bounds": bounds,
        }

    def _report_missing(self, raw: list[np.ndarray], columns: list[str]) -> None:
        counts = sum(np.isnan(values).sum(0) for values in raw)
        total = sum(len(values) for values in raw)
        self.missing_counts = {column: int(count) for column, count in zip(columns, counts, strict=True) if count}
        if self.missing_counts:
            listed = ", ".join(f"{c}: {k} of {total} ({k / total:.1%})" for c, k in self.missing_counts.items())
            rule = "masked in loss and metrics" if self.hparams.missing == "mask" else "forward-filled"
            rank_zero_info(
                f"{type(self).__name__}: {sum(self.missing_counts.values())} missing values in {self.source} "
                f"({listed}); inputs forward-filled, targets {rule}"
            )

    # --- what the model is linked to ------------------------------------------------------------------------------
    @property
    def in_features(self) -> int:
        """Input columns per step: the targets, then the covariates."""
        return len(self._data["targets"]) + len(self._data["covariates"])

    @property
    def out_features(self) -> int:
        """Forecast columns (the targets)."""
        return len(self._data["targets"])

    @property
    def target_mean(self) -> list[float]:
        """The scaler's center of each target (original units = scaled * ``target_std`` + ``target_mean``)."""
        return self._data["center"][: self.out_features].tolist()

    @property
    def target_std(self) -> list[float]:
        """The scaler's scale of each target."""
        return self._data["scale"][: self.out_features].tolist()

    @property
    def mase_scale(self) -> list[float]:
        """The mean absolute one-step change of each target over the training span (MASE's denominator)."""
        return self._data["mase_scale"].tolist()

    @property
    def season_length(self) -> int:
        """The seasonal period: as given, else the named series' own, else 1."""
        if self.hparams.season_length is not None:
            return self.hparams.season_length
        if self.series is None and self.hparams.csv_path is None:
            return NAMED_SERIES[self.hparams.dataset].season_length
        return 1

    @property
    def target_names(self) -> list[str]:
        """The target columns, in output order."""
        return list(self._data["targets"])

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Windows of ``input_size`` steps of the ``in_features`` columns (targets first) in original units, scaled
        with the training span's ``mean`` (center) and ``std`` (scale) of each column."""
        data = self._data
        return {
            "input": "series",
            "input_size": self.input_size,
            "horizon": self.horizon,
            "in_features": self.in_features,
            "mean": [float(value) for value in data["center"]],
            "std": [float(value) for value in data["scale"]],
            "targets": [str(name) for name in data["targets"]],
            "covariates": [str(name) for name in data["covariates"]],
        }

    def inverse_transform(self, scaled: torch.Tensor) -> torch.Tensor:
        """Targets ``(..., T)`` from scaled back to original units."""
        mean = torch.tensor(self.target_mean, dtype=scaled.dtype, device=scaled.device)
        return scaled * torch.tensor(self.target_std, dtype=scaled.dtype, device=scaled.device) + mean

    # --- Lightning hooks ---------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        data = self._data
        for split in ("train", "val", "test"):
            if split not in self.datasets:
                origins = data["origins"][split]
                if not len(origins):
                    raise ValueError(f"{self.source}: the {split} split has no window with an observed target")
                self.datasets[split] = WindowDataset(
                    data["values"], data["target_values"], data["observed"], origins, self.input_size, self.horizon
                )

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"{type(self).__name__} has no {split!r} split (or setup() was not called)")
        return make_loader(self.datasets[split], self.batch_size, shuffle, self.num_workers, self.pin_memory, _collate)


def _check_sorted(time: pd.Series, column: str, name: str) -> None:
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(time) and not pd.api.types.is_datetime64_any_dtype(time):
        parsed = pd.to_datetime(time, errors="coerce")
        if parsed.isna().any():
            raise ValueError(f"time column {column!r} of {name} is neither numeric nor dates: {time.iloc[0]}")
        time = parsed
    steps = np.asarray(time)
    bad = np.flatnonzero(steps[1:] <= steps[:-1])
    if len(bad):
        row = int(bad[0]) + 1
        raise ValueError(
            f"time column {column!r} of {name} is not sorted (strictly increasing): {time.iloc[row]} at row {row} "
            f"follows {time.iloc[row - 1]}; sort the rows by time (and drop duplicates)"
        )


def _numeric(frame: pd.DataFrame, columns: list[str], name: str) -> np.ndarray:
    import pandas as pd

    for column in columns:
        if not (pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column])):
            sample = frame[column].dropna()
            example = f", e.g. {sample.iloc[0]!r}" if len(sample) else ""
            raise ValueError(f"column {column!r} of {name} is not numeric (dtype {frame[column].dtype}{example})")
    values = frame[columns].to_numpy(dtype=np.float64)
    check_float32_range(values, columns, name)
    return values


def _fit_scaler(train_span: np.ndarray, scaler: str) -> tuple[np.ndarray, np.ndarray]:
    """Center and scale per column from the training span's observed values."""
    columns = train_span.shape[1]
    if scaler == "none":
        return np.zeros(columns), np.ones(columns)
    if scaler == "minmax":
        low, high = np.nanmin(train_span, 0), np.nanmax(train_span, 0)
        return low, np.where(high > low, high - low, 1.0)
    std = np.nanstd(train_span, 0)
    return np.nanmean(train_span, 0), np.where(std > 0, std, 1.0)


def _forward_fill(values: np.ndarray) -> np.ndarray:
    """Each NaN replaced by the last observed value above it; leading NaNs by 0 (the training center)."""
    import pandas as pd

    frame = pd.DataFrame(values).ffill()
    return frame.fillna(0.0).to_numpy()
