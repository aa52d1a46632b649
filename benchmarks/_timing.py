"""What the benchmarks share: per-batch timers, robust rates, a description of the machine they ran on, child runs
and result rows."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import date
from importlib.metadata import version
from pathlib import Path
from typing import Any

import lightning as L
import torch

RESULTS = Path(__file__).resolve().parent / "results"


class StepTimer(L.Callback):
    """Wall time of every training (and validation) batch, from the previous batch's end, so data loading counts."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.eval_times: list[float] = []
        self._last = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(self._lap(pl_module))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.eval_times.append(self._lap(pl_module))

    def _lap(self, pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        lap, self._last = now - self._last, now
        return lap


def median_rate(times: list[float], skip: int) -> float:
    """Batches per second from the median batch time after the first ``skip`` (warm-up, compilation)."""
    kept = times[skip:] if len(times) > skip else times
    return 1.0 / statistics.median(kept)


def machine() -> dict[str, Any]:
    """The machine and versions a result was measured with."""
    try:
        with open("/proc/cpuinfo") as file:
            model = next((line.split(":", 1)[1].strip() for line in file if line.startswith("model name")), "")
    except OSError:
        model = ""
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "lightning": L.__version__,
        "python": platform.python_version(),
    }


def run_child(
    code: str, args: Sequence[str], tag: str, cwd: str | Path | None = None, env: dict[str, str] | None = None
) -> tuple[dict[str, Any], float]:
    """Run ``python -c code *args`` and read the JSON it printed on its last line starting with ``tag``; returns it and
    the child's wall seconds (start-up included).

    Raises:
        RuntimeError: when the child fails or prints no such line, with the end of its error output.
    """
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    lines = [line for line in result.stdout.splitlines() if line.startswith(tag + " ")]
    if result.returncode or not lines:
        shown = " ".join(args[:3])
        raise RuntimeError(f"{shown} failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix(tag + " ")), seconds


def write_json(result: dict[str, Any], out: str | Path) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return path


def result_row(
    what: str, value: str, command: str, info: dict[str, Any], packages: tuple[str, ...] = ("torch", "lightning")
) -> dict[str, Any]:
    """One row of docs/results.md: what was measured and its value, the command, the machine (``info`` from
    :func:`machine`), the versions of ``packages`` and today's date."""
    return {
        "what": what,
        "value": value,
        "command": command,
        "machine": f"{info['cpu']} ({info['cores']} cores), {info['gpu'] or 'CPU'}",
        "versions": {package: version(package) for package in packages},
        "date": date.today().isoformat(),
    }
