"""The short recipe runs of ``benchmarks/recipe_metrics.py`` against their record from before the task layer owned
the loop: a refactor of the loop must not move a number.

On the machine and torch build the record was made with, every test metric and every logged value (each step's loss,
learning rate and gradient norms, each epoch's metrics) must be bit-identical; elsewhere floating-point kernels differ,
and values must agree to 1%. Three logged values differ by design and are left out (docs/tasks.md): ``train/loss`` is
now the epoch's mean over samples (over tokens for language models), as ``val/loss`` always was, where the
classification, denoising and forecasting tasks averaged the batch means, and language models also log
``train/ppl`` and ``train/bpc``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "benchmarks" / "reference" / "recipe_metrics_quick.json"
CHANGED_BY_DESIGN = {"train/loss", "train/ppl", "train/bpc"}
NEEDS_SHARED_DATA = {"shakespeare_char_gpt", "mnist_denoise"}


def _same_machine(recorded: dict, now: dict) -> bool:
    return all(recorded.get(key) == now[key] for key in ("machine", "torch", "lightning", "torchmetrics"))


def _close(want: float, got: float, exact: bool) -> bool:
    if exact:
        return want == got or (math.isnan(want) and math.isnan(got))
    return math.isclose(want, got, rel_tol=1e-2, abs_tol=1e-2)


@pytest.mark.slow
def test_recipe_numbers_equal_their_record(tmp_path):
    record = json.loads(RECORD.read_text())
    runs = [name for name in record if not name.startswith("_")]
    if not SHARED_DATA.is_dir():
        runs = [name for name in runs if name not in NEEDS_SHARED_DATA]
    out = tmp_path / "now.json"
    command = [sys.executable, str(REPO / "benchmarks" / "recipe_metrics.py"), "--runs=quick", f"--out={out}"]
    result = subprocess.run([*command, "--only", *runs], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    now = json.loads(out.read_text())
    exact = _same_machine(record["_meta"], now["_meta"])
    differences = []
    for run in runs:
        want, got = record[run], now[run]
        assert want["command"] == got["command"]
        for key in sorted(set(want["metrics"]) | set(got["metrics"])):
            a, b = want["metrics"].get(key), got["metrics"].get(key)
            if a is None or b is None or not _close(a, b, exact):
                differences.append(f"{run} {key}: recorded {a}, now {b}")
        for key in sorted((set(want["history"]) | set(got["history"])) - CHANGED_BY_DESIGN):
            a, b = want["history"].get(key), got["history"].get(key)
            same = a is not None and b is not None and len(a) == len(b)
            same = same and all(sa == sb and _close(va, vb, exact) for (sa, va), (sb, vb) in zip(a, b, strict=True))
            if not same:
                differences.append(f"{run} {key}: recorded {a}, now {b}")
    assert differences == [], "\n".join(differences[:20])
