"""Every forecaster and baseline on the same chronological split of one series; one table and a JSON file.

python benchmarks/forecast_table.py                                    # sunspots, 32 years -> 8 years, seed 0
python benchmarks/forecast_table.py --seeds 0,1,2                      # mean and spread over seeds
python benchmarks/forecast_table.py --dataset co2 --input_size 104 --horizon 13
python benchmarks/forecast_table.py --models nbeats_forecast,seasonal_naive_forecast --max_epochs 50

Each model is a registered preset of the ``forecasting`` task, sized by the datamodule (the links the CLI makes),
trained with Gaussian intervals, checkpointed on its task's monitor (``val/mae``; ``val/loss`` for the rules, whose
point forecast never changes) and tested with the best weights. Metrics are on the test span in original units; MASE
is scaled by the training span's one-step naive error; coverage is of the central 90% interval. The ``strategy``
column says how a model covers the horizon: ``rule``, ``direct`` (one output per horizon step at once) or
``recursive`` (a one-step model fed its own forecasts, ``lstm_recursive_forecast``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

import zoo
from datamodules.timeseries import TimeSeriesDataModule
from zoo.forecasters import RecursiveLSTMForecaster, _RuleForecaster

#: The rules, then the networks (a preset that is not registered is left out and named).
RULES = ("naive_forecast", "seasonal_naive_forecast", "window_mean_forecast")
NETWORKS = ("lstm_attn_forecast", "lstm_recursive_forecast", "tcn_forecast", "nbeats_forecast", "transformer_forecast")
#: Per-network arguments: dropout against overfitting 178 windows. Every network standardizes each window on its own
#: (``window_norm``, off with ``--window_norm 0``): that lowered the networks' mean validation MAE.
OVERRIDES: dict[str, dict[str, Any]] = {
    "lstm_attn_forecast": dict(dropout=0.1, lr=3e-3),
    "lstm_recursive_forecast": dict(dropout=0.1, lr=3e-3),  # the direct LSTM's settings: only the strategy differs
    "tcn_forecast": dict(dropout=0.1, lr=3e-3),
    "nbeats_forecast": dict(dropout=0.1, lr=1e-3),
    "transformer_forecast": dict(dropout=0.1, lr=1e-3),
}
RULE_ARGS = dict(lr=0.05, weight_decay=0.0)  # only the interval's log standard deviation trains
TEST_METRICS = ("mae", "rmse", "mase", "smape", "coverage", "mae_step1")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="sunspots", help="a named statsmodels series")
    parser.add_argument("--input_size", type=int, default=32)
    parser.add_argument("--horizon", type=int, default=8)
    parser.add_argument("--models", default="", help="comma-separated presets (default: every rule and network)")
    parser.add_argument("--max_epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=20, help="early-stopping patience in epochs")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; the table shows mean and spread")
    parser.add_argument("--window_norm", type=int, default=1, help="0: networks see the globally scaled windows")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small models: 1 is fastest)")
    parser.add_argument("--out", default="logs/forecast_table.json")
    parser.add_argument("--logs", default="logs", help="TensorBoard folder (forecast plots); '' for none")
    parser.add_argument("--fast_dev_run", action="store_true", help="one batch per model (a smoke test)")
    return parser.parse_args(argv)


def available_models(names: str = "") -> list[str]:
    """The requested presets, or every rule and registered network."""
    if names:
        return [name.strip() for name in names.split(",") if name.strip()]
    return [name for name in (*RULES, *NETWORKS) if zoo.is_model(name)]


def strategy(model: zoo.Forecaster) -> str:
    """How a model covers the horizon: ``"rule"``, ``"recursive"`` (one step, fed back) or ``"direct"`` (at once)."""
    if isinstance(model, _RuleForecaster):
        return "rule"
    return "recursive" if isinstance(model, RecursiveLSTMForecaster) else "direct"


def build_model(name: str, datamodule: TimeSeriesDataModule, window_norm: bool = True) -> zoo.Forecaster:
    """The preset sized by the data, with Gaussian intervals and the comparison's arguments."""
    cls = type(zoo.create_model(name))
    links = {key: getattr(datamodule, key) for key in cls.data_links}
    network = {**OVERRIDES.get(name, {}), "window_norm": window_norm}
    extra = RULE_ARGS if issubclass(cls, _RuleForecaster) else network
    return zoo.create_model(name, distribution="gaussian", **links, **extra)


def run_one(name: str, datamodule: TimeSeriesDataModule, args: argparse.Namespace, seed: int = 0) -> dict[str, Any]:
    """Fit, restore the best checkpoint, test: the test metrics, the best validation score and wall times."""
    L.seed_everything(seed, verbose=False)
    model = build_model(name, datamodule, window_norm=bool(args.window_norm))
    monitor, mode = model.monitor
    checkpoints = tempfile.TemporaryDirectory(prefix=f"forecast_table_{name}_")  # this run's best weights only
    checkpoint = ModelCheckpoint(dirpath=checkpoints.name, monitor=monitor, mode=mode, save_top_k=1)
    logger = TensorBoardLogger(args.logs, name="forecast_table", version=f"{name}_seed{seed}") if args.logs else False
    trainer = L.Trainer(
        max_epochs=args.max_epochs,
        callbacks=[checkpoint, EarlyStopping(monitor=monitor, mode=mode, patience=args.patience)],
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        fast_dev_run=args.fast_dev_run,
        default_root_dir=checkpoints.name,
        log_every_n_steps=10,
        gradient_clip_val=1.0,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    fit_s = time.perf_counter() - start
    if checkpoint.best_model_path:
        state = zoo.read_checkpoint(checkpoint.best_model_path)["state_dict"]
        model.load_state_dict(state)
    best = checkpoint.best_model_score
    checkpoints.cleanup()
    (metrics,) = trainer.test(model, datamodule=datamodule, verbose=False)
    row: dict[str, Any] = {key: metrics.get(f"test/{key}") for key in TEST_METRICS}
    row.update(
        model=name,
        strategy=strategy(model),
        seed=seed,
        mae_by_step=[metrics[f"test/mae_step{h}"] for h in range(1, datamodule.horizon + 1)],
        monitor=monitor,
        best_val=None if best is None else float(best),
        params=sum(p.numel() for p in model.parameters()),
        epochs=trainer.current_epoch,
        fit_s=fit_s,
        total_s=time.perf_counter() - start,
    )
    return row


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model, best mean test MASE first: each number's mean over seeds and its standard deviation."""
    out = []
    for name in dict.fromkeys(row["model"] for row in rows):
        runs = [row for row in rows if row["model"] == name]
        summary: dict[str, Any] = {
            "model": name,
            "strategy": runs[0]["strategy"],
            "params": runs[0]["params"],
            "seeds": len(runs),
        }
        for key in (*TEST_METRICS, "epochs", "total_s"):
            values = np.array([np.nan if run[key] is None else run[key] for run in runs], dtype=float)
            summary[key], summary[f"{key}_std"] = float(values.mean()), float(values.std())
        summary["mae_last_step"] = float(np.mean([run["mae_by_step"][-1] for run in runs]))
        out.append(summary)
    return sorted(out, key=lambda r: r["mase"])


def format_table(summary: list[dict[str, Any]], horizon: int) -> str:
    """A Markdown table; ``±`` is the standard deviation over seeds."""
    spread = summary[0]["seeds"] > 1

    def cell(row: dict[str, Any], key: str, digits: int) -> str:
        if np.isnan(row[key]):
            return "-"
        return f"{row[key]:.{digits}f}" + (f" ± {row[key + '_std']:.{digits}f}" if spread else "")

    header = (
        "| model | params | strategy | MAE | RMSE | MASE | sMAPE | coverage 90% | MAE h=1 | "
        f"MAE h={horizon} | epochs | time (s) |"
    )
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for row in summary:
        cells = [row["model"], f"{row['params']:,}", row["strategy"]]
        cells += [cell(row, "mae", 2), cell(row, "rmse", 2), cell(row, "mase", 3)]
        cells += [cell(row, "smape", 3), cell(row, "coverage", 2), cell(row, "mae_step1", 2)]
        cells += [f"{row['mae_last_step']:.2f}", f"{row['epochs']:.0f}", f"{row['total_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the comparison; returns what it writes to ``--out``."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    datamodule = TimeSeriesDataModule(
        dataset=args.dataset, input_size=args.input_size, horizon=args.horizon, batch_size=args.batch_size
    )
    datamodule.setup()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    start = time.perf_counter()
    rows = [run_one(name, datamodule, args, seed) for seed in seeds for name in available_models(args.models)]
    summary = summarize(rows)
    missing = [name for name in NETWORKS if not zoo.is_model(name)]
    report = {
        "dataset": args.dataset,
        "input_size": args.input_size,
        "horizon": args.horizon,
        "season_length": datamodule.season_length,
        "windows": {split: len(dataset) for split, dataset in datamodule.datasets.items()},
        "command": "python benchmarks/forecast_table.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seeds": seeds,
        "window_norm": bool(args.window_norm),
        "torch_threads": torch.get_num_threads(),
        "wall_s": time.perf_counter() - start,
        "not_registered": missing,
        "summary": summary,
        "rows": rows,
    }
    table = format_table(summary, args.horizon)
    print(table)
    print(f"{len(summary)} models x {len(seeds)} seeds in {report['wall_s']:.0f} s; windows {report['windows']}")
    if missing:
        print(f"not registered, so not in the table: {', '.join(missing)}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as file:
        json.dump({**report, "table": table}, file, indent=2)
    return report


if __name__ == "__main__":
    main()
