"""Training-loop overhead: steps/s of the zoo path (recipe Trainer settings) against a hand-written PyTorch loop.

Both train the same 784-128-10 MLP (``mlp_small``, AdamW, cosine schedule per step) on the same DataLoader and batch
size, alternately in one process, so the ratio is measured side by side. The zoo path runs ``recipes.mnist_mlp``
through its CLI entry point with every default: TensorBoard logging, checkpointing, early stopping, LR monitor,
progress bar, gradient statistics, non-finite guard, exact-resume state, train metrics (accuracy, top-5, F1). A
third row runs the same module under a bare ``L.Trainer`` (no logger, callbacks or progress bar): the floor that
Lightning's own loop sets, against which the recipe's defaults are measured too (their own cost). A fourth adds to
that bare Trainer as many callbacks that do nothing as the recipe has, under the recipe's profiler: what Lightning's
per-hook dispatch alone charges for that many callbacks, so the recipe's cost splits into dispatch and work. Only
training steps are timed: a step runs from the end of the previous step to the end of this one (data loading
included); validation is excluded on every path.

    python benchmarks/loop_overhead.py                       # CPU; MNIST from ../shared/data when present
    python benchmarks/loop_overhead.py --device cuda --epochs 3

Prints a table and writes ``benchmarks/results/loop_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from _timing import StepTimer

import zoo
from callbacks import NullProfiler
from datamodules import MNISTDataModule
from recipes import mnist_mlp
from zoo.tasks.optim import build_optimizer, build_scheduler

REPO = Path(__file__).resolve().parents[1]


def synthetic_mnist(root: Path, n_train: int = 60_000, n_test: int = 10_000) -> Path:
    """MNIST-format files of random digits (for machines without ../shared/data); the timing does not care."""
    from datamodules.mnist import write_idx

    if not (root / "MNIST" / "raw").is_dir():
        rng = np.random.default_rng(0)
        for prefix, count in (("train", n_train), ("t10k", n_test)):
            write_idx(root / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
            write_idx(root / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, count))
    return root


def zoo_steps(data_dir: Path, epochs: int, device: str, extra: list[str] = ()) -> tuple[list[float], int]:
    """The recipe's step times, and how many callbacks it trained with (the timer not counted)."""
    accelerator = "gpu" if device == "cuda" else "cpu"
    cli = mnist_mlp.main(
        [
            "fit",
            f"--data.data_dir={data_dir}",
            f"--trainer.max_epochs={epochs}",
            f"--trainer.accelerator={accelerator}",
            "--trainer.devices=1",
            "--test_after_fit=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={REPO / 'benchmarks' / 'results'}",
            "--trainer.logger.init_args.save_dir=benchmarks/results/logs",
            f"--trainer.callbacks+={StepTimer.__module__}.StepTimer",  # appended to the recipe's callbacks
            *extra,
        ]
    )
    timer = next(callback for callback in cli.trainer.callbacks if type(callback).__name__ == "StepTimer")
    assert isinstance(cli.model, zoo.MLP) and cli.model.hparams.hidden_dims == [128]
    return timer.times, len(cli.trainer.callbacks) - 1


def lightning_steps(data_dir: Path, epochs: int, device: str, idle_callbacks: int = 0) -> list[float]:
    """Plain Lightning floor: the same module and loader under a bare Trainer (no logger, callbacks or bar); with
    ``idle_callbacks``, that many callbacks that do nothing, under the recipes' profiler."""
    timer = StepTimer()
    idle = [L.Callback() for _ in range(idle_callbacks)]
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[*idle, timer],
        profiler=NullProfiler() if idle_callbacks else None,
    )
    trainer.fit(zoo.create_model("mlp_small"), MNISTDataModule(data_dir=str(data_dir), download=False))
    return timer.times


def raw_steps(data_dir: Path, epochs: int, device: str) -> list[float]:
    """The hand-written loop: forward, loss, backward, step, schedule step; the same loader and optimizer."""
    dm = MNISTDataModule(data_dir=str(data_dir), download=False)
    dm.setup("fit")
    loader = dm.train_dataloader()
    model = zoo.create_model("mlp_small").to(device)
    optimizer = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.01, momentum=0.9)
    total = epochs * len(loader)
    scheduler = build_scheduler(optimizer, "cosine", total)["scheduler"]
    times = []
    for _ in range(epochs):
        last = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if device == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            times.append(now - last)
            last = now
    return times


def steps_per_second(times: list[float], skip: int = 20) -> float:
    """Median-based rate, skipping the first steps (allocator and thread-pool warm-up)."""
    return 1.0 / statistics.median(times[min(skip, len(times) // 4) :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternating raw/zoo rounds")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("recipe_args", nargs="*", help="extra recipe overrides, e.g. --trainer.max_epochs=3")
    parser.add_argument("--data_dir", help="MNIST files (default: ../shared/data/mnist, else synthetic ones)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "loop_overhead.json"))
    args = parser.parse_args()

    shared = REPO.parent / "shared" / "data" / "mnist"
    if args.data_dir:
        data_dir = Path(args.data_dir).resolve()
    else:
        data_dir = shared if shared.is_dir() else synthetic_mnist(REPO / "benchmarks" / "results" / "mnist")
    os.chdir(REPO)
    rates: dict[str, list[float]] = {"raw": [], "lightning": [], "zoo": [], "idle": []}
    for _ in range(args.rounds):
        rates["raw"].append(steps_per_second(raw_steps(data_dir, args.epochs, args.device)))
        rates["lightning"].append(steps_per_second(lightning_steps(data_dir, args.epochs, args.device)))
        zoo_times, n_callbacks = zoo_steps(data_dir, args.epochs, args.device, args.recipe_args)
        rates["zoo"].append(steps_per_second(zoo_times))
        rates["idle"].append(steps_per_second(lightning_steps(data_dir, args.epochs, args.device, n_callbacks)))
    ratios = [z / r for z, r in zip(rates["zoo"], rates["raw"], strict=True)]
    step_ms = {path: 1000 / float(np.median(path_rates)) for path, path_rates in rates.items()}
    floor = [lt / r for lt, r in zip(rates["lightning"], rates["raw"], strict=True)]
    # the recipe's own cost: its defaults against the bare Trainer on the same module, loader and round
    over_bare = [z / lt for z, lt in zip(rates["zoo"], rates["lightning"], strict=True)]
    # ... split into Lightning's dispatch to that many idle callbacks, and what the callbacks do
    dispatch = [i / lt for i, lt in zip(rates["idle"], rates["lightning"], strict=True)]
    work = [z / i for z, i in zip(rates["zoo"], rates["idle"], strict=True)]
    result = {
        "device": args.device,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "lightning": L.__version__,
        "data": str(data_dir),
        "batch_size": 128,
        "recipe_overrides": args.recipe_args,
        "epochs_per_round": args.epochs,
        "raw_steps_per_s": rates["raw"],
        "zoo_steps_per_s": rates["zoo"],
        "lightning_steps_per_s": rates["lightning"],
        "ratio_per_round": ratios,
        "ratio_median": float(np.median(ratios)),
        "lightning_ratio_per_round": floor,
        "lightning_ratio_median": float(np.median(floor)),
        "zoo_to_lightning_per_round": over_bare,
        "zoo_to_lightning_median": float(np.median(over_bare)),
        "recipe_callbacks": n_callbacks,
        "idle_callbacks_steps_per_s": rates["idle"],
        "idle_callbacks_to_lightning_per_round": dispatch,
        "idle_callbacks_to_lightning_median": float(np.median(dispatch)),
        "zoo_to_idle_callbacks_per_round": work,
        "zoo_to_idle_callbacks_median": float(np.median(work)),
        "step_ms_median": step_ms,
        # what each path adds to a raw step, and what a ratio of 0.90 would allow
        "overhead_ms": {path: step_ms[path] - step_ms["raw"] for path in ("lightning", "idle", "zoo")},
        "overhead_ms_at_0.90": step_ms["raw"] / 0.9 - step_ms["raw"],
    }
    width = 10 * args.rounds + 4
    print(f"\n{'path':<16}{'steps/s per round':>{width}}{'median ratio to raw':>22}")
    idle_name = f"bare + {n_callbacks} idle"
    names = {"raw": "raw loop", "lightning": "lightning bare", "idle": idle_name, "zoo": "zoo recipe"}
    for key, path in names.items():
        ratio = float(np.median([rate / raw for rate, raw in zip(rates[key], rates["raw"], strict=True)]))
        print(f"{path:<16}{''.join(f'{rate:10.1f}' for rate in rates[key]):>{width}}{ratio:>22.3f}")
    overhead = result["overhead_ms"]
    print(f"recipe defaults / bare Trainer: median {result['zoo_to_lightning_median']:.3f} (per round: "
          f"{', '.join(f'{ratio:.3f}' for ratio in over_bare)})")  # fmt: skip
    print(f"  = Lightning's dispatch to {n_callbacks} idle callbacks {result['idle_callbacks_to_lightning_median']:.3f}"
          f" x the callbacks' own work {result['zoo_to_idle_callbacks_median']:.3f} (medians)")  # fmt: skip
    print(
        f"per step: raw {step_ms['raw']:.2f} ms; Lightning adds {overhead['lightning']:.2f} ms, the recipe "
        f"{overhead['zoo']:.2f} ms; a ratio of 0.90 allows {result['overhead_ms_at_0.90']:.2f} ms"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
