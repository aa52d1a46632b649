"""The benchmarks run end to end on small synthetic data and write what their README rows quote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import make_mnist

REPO = Path(__file__).resolve().parents[1]


def test_loop_overhead_writes_rates_ratios_and_per_step_overhead(tmp_path):
    make_mnist(tmp_path / "mnist", n_train=3000, n_test=64)  # 21 training steps per epoch at batch 128
    out = tmp_path / "loop_overhead.json"
    command = [sys.executable, str(REPO / "benchmarks" / "loop_overhead.py"), "--epochs=1", "--rounds=1"]
    command += [f"--data_dir={tmp_path / 'mnist'}", f"--out={out}", "--"]
    command += [f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "zoo recipe" in result.stdout and "a ratio of 0.90 allows" in result.stdout
    report = json.loads(out.read_text())
    assert report["data"] == str(tmp_path / "mnist") and report["recipe_overrides"][0].startswith("--trainer")
    rates = {path: report[f"{path}_steps_per_s"][0] for path in ("raw", "lightning", "zoo")}
    assert all(rate > 0 for rate in rates.values())
    assert report["ratio_median"] == rates["zoo"] / rates["raw"]
    step_ms = report["step_ms_median"]
    assert abs(step_ms["zoo"] - step_ms["raw"] - report["overhead_ms"]["zoo"]) < 1e-9
    assert abs(report["overhead_ms_at_0.90"] - step_ms["raw"] / 9) < 1e-9
