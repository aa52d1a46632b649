"""The test metrics of recipes run with a fixed seed on one thread: the record a refactor is compared against.

Each recipe runs in its own process (``fit`` with ``test_after_fit``) on one CPU thread, so the numbers repeat bit
for bit on one machine and torch build. The JSON maps each run's name to its command and its ``test/*`` metrics.

    python benchmarks/recipe_metrics.py                         # the four reference runs (about 10 minutes)
    python benchmarks/recipe_metrics.py --runs quick --out q.json  # the short runs tests/test_recipe_metrics.py uses
    python benchmarks/recipe_metrics.py --compare benchmarks/reference/recipe_metrics.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from _timing import run_child

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]

#: The runs whose metrics a refactor of the task layer must not move.
REFERENCE = {
    "digits_cnn": ["digits_cnn"],
    "parity_gru": ["parity_gru"],
    "forecast_sunspots": ["forecast_sunspots"],
    "shakespeare_char_gpt_200": [
        "shakespeare_char_gpt",
        "--trainer.max_steps=200",
        "--data.path={shared}/tinyshakespeare/input.txt",
    ],
}
#: Short runs of the same recipes (a few seconds each), for the test suite.
QUICK = {
    "digits_cnn": ["digits_cnn", "--trainer.max_epochs=2"],
    "parity_gru": ["parity_gru", "--trainer.max_epochs=1", "--trainer.limit_train_batches=20"],
    "forecast_sunspots": ["forecast_sunspots", "--trainer.max_epochs=3"],
    "shakespeare_char_gpt": [
        "shakespeare_char_gpt",
        "--trainer.max_steps=20",
        "--data.batches_per_epoch=10",
        "--trainer.limit_val_batches=4",
        "--trainer.limit_test_batches=4",
        "--model.init_args.warmup_steps=5",
        "--data.path={shared}/tinyshakespeare/input.txt",
    ],
    "extrema_bilstm": ["extrema_bilstm", "--trainer.max_epochs=1", "--trainer.limit_train_batches=20"],
    "seq2seq_reverse": [
        "seq2seq_reverse",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=20",
        "--trainer.limit_val_batches=2",
        "--trainer.limit_test_batches=2",
    ],
    "mnist_denoise": [
        "mnist_denoise",
        "--data.data_dir={shared}/mnist",
        "--data.batch_size=16",  # IRCNN's dilated convs cost 1.2 GFLOP per image and step
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=10",
        "--trainer.limit_val_batches=2",
        "--trainer.limit_test_batches=2",
    ],
}
RUNS = {"reference": REFERENCE, "quick": QUICK}
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
_CHILD = """
import csv, json, os, sys, torch
torch.set_num_threads(1)
from importlib import import_module
cli = import_module("recipes." + sys.argv[1]).main(["fit", *sys.argv[2:]])
metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}
history = {}
with open(os.path.join(cli.trainer.logger.log_dir, "metrics.csv")) as f:
    for row in csv.DictReader(f):
        for key, value in row.items():
            if key not in ("step", "epoch") and value:
                history.setdefault(key, []).append([int(row["step"]), float(value)])
print("METRICS " + json.dumps({"metrics": metrics, "history": history}, sort_keys=True))
"""


def run_recipe(args: list[str], shared: Path, workdir: Path) -> dict[str, dict]:
    """The ``test/*`` metrics of one recipe run in a child process on one thread, and the history of every logged
    value (``{name: [[step, value], ...]}``, from a CSV logger)."""
    recipe, *options = (arg.format(shared=shared) for arg in args)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    logger = ["--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.init_args.save_dir=logs"]
    return run_child(_CHILD, [recipe, *options, *QUIET, *logger], "METRICS", cwd=workdir, env=env)[0]


def machine_and_versions() -> dict[str, str]:
    """The date, CPU, Python and library versions a record was made with."""
    import platform
    from datetime import date
    from importlib.metadata import version

    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "")
    return {
        "date": date.today().isoformat(),
        "machine": f"{cpu or platform.processor()} ({os.cpu_count()} cores), one thread",
        "python": platform.python_version(),
        **{name: version(name) for name in ("torch", "lightning", "torchmetrics")},
    }


def _cpuinfo() -> list[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            return handle.read().splitlines()
    except OSError:
        return []


def compare(record: dict, reference: dict) -> list[str]:
    """Lines naming every test metric and logged value that differs from ``reference`` (bit for bit), or is missing
    from either."""
    lines = []
    for run, expected in reference.items():
        if run.startswith("_"):  # the record's machine and versions
            continue
        for part in ("metrics", "history"):
            want, got = expected.get(part, {}), record.get(run, {}).get(part, {})
            for key in sorted(set(want) | set(got)):
                if want.get(key) != got.get(key):
                    lines.append(f"{run} {part} {key}: reference {want.get(key)!r}, now {got.get(key)!r}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", choices=sorted(RUNS), default="reference")
    parser.add_argument("--only", nargs="*", help="run these names only")
    parser.add_argument("--shared", type=Path, default=SHARED_DATA, help="the folder of the real data")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/recipe_metrics.json"))
    parser.add_argument("--compare", type=Path, help="a record to compare with, bit for bit")
    options = parser.parse_args(argv)
    record: dict = {"_meta": machine_and_versions()}
    with tempfile.TemporaryDirectory() as workdir:
        for name, args in RUNS[options.runs].items():
            if options.only and name not in options.only:
                continue
            result = run_recipe(args, options.shared, Path(workdir))
            command = f"python -m recipes.{args[0]} fit {' '.join(args[1:])}".strip()
            record[name] = {"command": command, **result}
            print(name, json.dumps(result["metrics"], sort_keys=True), flush=True)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    if options.compare:
        differences = compare(record, json.loads(options.compare.read_text()))
        print("\n".join(differences) or "every metric is bit-identical")
        return 1 if differences else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
