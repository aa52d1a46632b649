"""Shared helpers: the quiet Trainer and command-line options, real on-disk dataset formats written by the tests, and
the optional ../shared/data copy."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

import datamodules.mnist

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under `pytest -n N` the workers share the cores: one thread each, and for the processes the tests start too
    # (torch reads OMP_NUM_THREADS when it starts).
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
#: Command-line options that keep a recipe's output to what a test reads.
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


REPO = Path(__file__).resolve().parents[1]


def run_benchmark(name: str, *args: str, timeout: int = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``benchmarks/<name>.py`` as its users do (a script in its own process) and return the finished process."""
    command = [sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen | None = None, timeout: float = 90.0) -> None:
    """Poll ``url/health`` until it answers 200; fail early when ``process`` (the server) exits."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {process.stderr.read().decode()}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"no answer from {url}/health within {timeout} s")


class ThreadServer:
    """uvicorn serving ``app`` from a thread on a free 127.0.0.1 port (a second process would import torch again);
    ``with ThreadServer(app) as url:`` starts it and stops it."""

    def __init__(self, app) -> None:
        import uvicorn

        self.url = f"http://127.0.0.1:{(port := free_port())}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        wait_until_healthy(self.url)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def quiet_trainer(**kwargs) -> L.Trainer:
    """A CPU Trainer without logger, checkpoints, progress bar or model summary unless ``kwargs`` ask for them."""
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**defaults, **kwargs})


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """Write ``array`` in the IDX format of the MNIST distribution files, as ``path.gz`` when ``compress``."""
    datamodules.mnist.write_idx(f"{path}.gz" if compress else path, array)


def make_mnist(root: Path, n_train: int = 256, n_test: int = 64, seed: int = 0, folder: str = "MNIST/raw") -> dict:
    """Write a small MNIST-format dataset whose label is readable from the image (a bright row at ``label*2``)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        images[np.arange(n), labels * 2 + 4, 4:24] = 255
        write_idx(root / folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(root / folder / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[prefix] = (images, labels)
    return arrays


def read_csv(log_dir: str) -> dict[str, dict[int, float]]:
    """A CSVLogger's ``metrics.csv`` as ``{metric: {step: value}}``."""
    out: dict[str, dict[int, float]] = {}
    with open(Path(log_dir) / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key != "step" and value:
                    out.setdefault(key, {})[int(row["step"])] = float(value)
    return out


@pytest.fixture
def one_thread():
    """Small models on a shared CPU: one thread is many times faster than two contending ones (use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    """A data_dir holding a small MNIST in torchvision's layout (gzipped IDX files in MNIST/raw/)."""
    make_mnist(tmp_path)
    return tmp_path


@pytest.fixture
def shared_data() -> Path:
    """The real datasets beside the checkout; skips when they are absent (a user's fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in its own folder (logs and checkpoints land there) with a fixed seed."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    os.environ.setdefault("PYTHONHASHSEED", "0")
