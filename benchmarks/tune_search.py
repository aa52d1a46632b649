"""A documented search: ``zoo tune --recipe mnist_mlp``, the classic Lightning + Ray Tune example run by Optuna
(hidden 128/256/512, dropout 0.1-0.5, lr 1e-4 to 1e-2 on a log scale, ASHA over at most 10 epochs with grace 1 and
reduction factor 2, 10 trials), then the best configuration trained anew with ``fit -c best.yaml`` and tested.

    python benchmarks/tune_search.py                     # about 15 minutes on 2 CPU cores
    python benchmarks/tune_search.py --n_trials 3 --max_epochs 2 --out /tmp/quick.json   # a quick check

Prints the trials and writes ``benchmarks/results/tune_mnist_mlp.json``: the trials, and result rows for the best
trial's validation accuracy and the retrained model's test accuracy.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import machine, result_row

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist"
OUT = REPO / "benchmarks" / "results" / "tune_mnist_mlp.json"


def _run(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    print(result.stdout[-4000:])
    return time.perf_counter() - started


def _describe(args: dict[str, object]) -> str:
    """``hidden [512], dropout 0.124, lr 2.16e-03`` from the searched fit arguments."""
    a = {key.rsplit(".", 1)[-1]: value for key, value in args.items()}
    return f"hidden {a['hidden_dims']}, dropout {a['dropout']:.3f}, lr {a['lr']:.2e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=str(MNIST))
    parser.add_argument("--n_trials", type=int, default=None, help="default: the space file's (10)")
    parser.add_argument("--max_epochs", type=int, default=None, help="default: the space file's (10)")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    parser.add_argument("--out", default=str(OUT))
    options = parser.parse_args()
    if not Path(options.data_dir).is_dir():
        sys.exit(f"MNIST not found at {options.data_dir}: put the four IDX .gz files there (see ../shared/data)")

    work = Path(tempfile.mkdtemp(prefix="tune_search_"))
    tune_args = ["tune", "--recipe", "mnist_mlp", "--seed", str(options.seed), "--out", "study"]
    if options.n_trials:
        tune_args += ["--n_trials", str(options.n_trials)]
    fit_args = [f"--data.data_dir={options.data_dir}", "--trainer.enable_progress_bar=false"]
    if options.max_epochs:
        fit_args.append(f"--trainer.max_epochs={options.max_epochs}")
    zoo = [sys.executable, "-m", "recipes.console"]
    search_seconds = _run([*zoo, *tune_args, "--", *fit_args], work)
    summary = json.loads((work / "study" / "summary.json").read_text())
    with open(work / "study" / "trials.csv") as file:
        trials = list(csv.DictReader(file))

    logger = ["--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.init_args.save_dir=best"]
    retrain_seconds = _run([*zoo, "fit", "-c", "study/best.yaml", *fit_args, *logger], work)
    with open(next((work / "best").rglob("metrics.csv"))) as file:
        test_acc = next(float(row["test/acc"]) for row in csv.DictReader(file) if row.get("test/acc"))
    info = machine()
    states = summary["trials"]
    tune_command = " ".join(["zoo", *tune_args[:-2], "--", "--data.data_dir=../shared/data/mnist"])
    rows = [
        result_row(
            f"zoo tune --recipe mnist_mlp: best val/acc of {sum(states.values())} trials "
            f"({states['complete']} complete, {states['pruned']} pruned by ASHA), {search_seconds / 60:.1f} min",
            f"{100 * summary['best_value']:.2f}%",
            tune_command,
            info,
            ("torch", "lightning", "optuna"),
        ),
        result_row(
            f"the best configuration ({_describe(summary['best_args'])}) trained anew with fit -c best.yaml, "
            "test accuracy",
            f"{100 * test_acc:.2f}%",
            "zoo fit -c logs/tune/mnist_mlp/best.yaml --data.data_dir ../shared/data/mnist",
            info,
            ("torch", "lightning", "optuna"),
        ),
    ]
    result = {
        "rows": rows,
        "search_seconds": round(search_seconds, 1),
        "retrain_seconds": round(retrain_seconds, 1),
        "summary": summary,
        "trials": trials,
    }
    Path(options.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(rows, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
