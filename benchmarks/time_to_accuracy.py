"""Time to a test accuracy on MNIST: the ``mnist_cnn`` recipe against a hand-written PyTorch loop, side by side.

    python benchmarks/time_to_accuracy.py                          # MNIST from ../shared/data, 99.2%, 2 rounds
    python benchmarks/time_to_accuracy.py --target 0.99 --rounds 1
    python benchmarks/time_to_accuracy.py -- --trainer.max_epochs 4   # recipe overrides after "--"

Both run as their own processes, alternately, and are timed from the parent's ``Popen`` to the moment they report,
so Python start-up, imports and data loading count on both sides. The raw loop (2 conv layers 32/64 with
BatchNorm, FC 128, AdamW + OneCycleLR, batch 128, MNIST preloaded as tensors, test set evaluated after every
epoch) reaches the target at the end of the first epoch whose test accuracy meets it; the recipe runs with its own
defaults (its YAML; the test after fit included) and its time is the whole process, which must end with the test
accuracy at or above the target. Prints a table and writes ``benchmarks/results/time_to_accuracy.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _timing import RESULTS, machine, write_json

REPO = Path(__file__).resolve().parents[1]

RAW_EPOCHS = 3


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"), help="holds mnist/ or MNIST/")
    parser.add_argument("--target", type=float, default=0.992, help="test accuracy to reach")
    parser.add_argument("--rounds", type=int, default=2, help="alternating raw/recipe rounds")
    parser.add_argument("--raw_epochs", type=int, default=RAW_EPOCHS)
    parser.add_argument("--raw_lr", type=float, default=3e-3, help="the raw loop's OneCycle peak")
    parser.add_argument("--out", default=str(RESULTS / "time_to_accuracy.json"))
    parser.add_argument("--raw_child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("recipe_args", nargs="*", help="extra recipe overrides")
    return parser.parse_args(argv)


def mnist_root(data_dir: Path) -> Path:
    """The folder MNISTDataModule takes: one holding the four IDX files, gzipped or not."""
    for root in (data_dir / "mnist", data_dir):
        if list(root.glob("train-images-idx3-ubyte*")) or (root / "MNIST" / "raw").is_dir():
            return root
    raise SystemExit(
        f"error: no MNIST under {data_dir}: put train-images-idx3-ubyte.gz (and the other 3) in {data_dir}"
    )


# --- the hand-written loop, run as a child process --------------------------------------------------------------


def raw_child(args: argparse.Namespace) -> None:
    """Train and test the plain PyTorch network; print one JSON line per epoch (the parent timestamps them)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from datamodules import MNISTDataModule

    torch.manual_seed(0)
    data = MNISTDataModule(data_dir=str(mnist_root(Path(args.data_dir))))
    data.prepare_data()  # unpacks the IDX files; the arrays are then read directly, as a raw loop would

    def tensors(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = data.load_arrays(train)
        x = (images.float().div(255).sub(0.1307).div(0.3081)).reshape(-1, 1, 28, 28)
        return x, labels.long()

    (x_train, y_train), (x_test, y_test) = tensors(True), tensors(False)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10),
    )  # fmt: skip
    batch, epochs = 128, args.raw_epochs
    steps = epochs * -(-len(x_train) // batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.raw_lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.raw_lr, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        for index in torch.randperm(len(x_train)).split(batch):
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.no_grad():
            chunks = zip(x_test.split(1000), y_test.split(1000), strict=True)
            correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in chunks)
        print(json.dumps({"epoch": epoch + 1, "test_acc": correct / len(x_test)}), flush=True)


def run_raw(args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--raw_child", f"--data_dir={args.data_dir}"]
    command += [f"--raw_epochs={args.raw_epochs}", f"--raw_lr={args.raw_lr}"]
    start = time.perf_counter()
    epochs = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO) as child:
        for line in child.stdout:
            if line.startswith("{"):
                epochs.append({**json.loads(line), "elapsed_s": time.perf_counter() - start})
    if child.returncode:
        raise SystemExit(f"error: the raw loop failed (exit {child.returncode})")
    reached = next((e for e in epochs if e["test_acc"] >= args.target), None)
    return {
        "epochs": epochs,
        "final_test_acc": epochs[-1]["test_acc"],
        "time_to_target_s": reached["elapsed_s"] if reached else None,
        "wall_s": time.perf_counter() - start,
    }


def run_recipe(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "recipes.mnist_cnn", "fit", f"--data.data_dir={mnist_root(Path(args.data_dir))}"]
    command += ["--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={workdir}"]
    command += [f"--trainer.default_root_dir={workdir}", *args.recipe_args]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"error: the recipe failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    scalars = read_scalars(max(workdir.glob("mnist_cnn/version_*"), key=lambda path: path.stat().st_mtime))
    test_acc = scalars["test/acc"][-1]
    return {
        "val_acc_per_epoch": scalars.get("val/acc", []),
        "final_test_acc": test_acc,
        "epochs": len(scalars.get("val/acc", [])),
        "time_to_target_s": wall if test_acc >= args.target else None,
        "wall_s": wall,
    }


def read_scalars(run_dir: Path) -> dict[str, list[float]]:
    """Every scalar series of a TensorBoard run folder, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [event.value for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.raw_child:
        raw_child(args)
        return {}
    mnist_root(Path(args.data_dir))  # fail before any run when the data is absent
    rounds = []
    with tempfile.TemporaryDirectory() as workdir:
        for index in range(args.rounds):
            raw = run_raw(args)
            recipe = run_recipe(args, Path(workdir) / f"round{index}")
            ratio = (
                recipe["time_to_target_s"] / raw["time_to_target_s"]
                if recipe["time_to_target_s"] and raw["time_to_target_s"]
                else None
            )
            rounds.append({"raw": raw, "recipe": recipe, "ratio": ratio})
            print(
                f"round {index}: raw {raw['final_test_acc']:.4f} ({raw['time_to_target_s'] or float('nan'):.0f} s "
                f"to {args.target:.3f}), recipe {recipe['final_test_acc']:.4f} in {recipe['wall_s']:.0f} s, "
                f"ratio {ratio if ratio is not None else float('nan'):.3f}",
                flush=True,
            )
    ratios = [r["ratio"] for r in rounds if r["ratio"] is not None]
    result = {
        "machine": machine(),
        "command": " ".join(["python", "benchmarks/time_to_accuracy.py", *(sys.argv[1:] if argv is None else argv)]),
        "target": args.target,
        "rounds": rounds,
        "ratio_median": statistics.median(ratios) if ratios else None,
        "all_reached": len(ratios) == len(rounds),
    }
    print_table(result)
    write_json(result, args.out)
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{'path':<12}{'test acc per round':>28}{'seconds to target per round':>32}")
    for path in ("raw", "recipe"):
        accs = " ".join(f"{r[path]['final_test_acc']:.4f}" for r in result["rounds"])
        times = " ".join(
            f"{r[path]['time_to_target_s']:.0f}" if r[path]["time_to_target_s"] else "-" for r in result["rounds"]
        )
        print(f"{path:<12}{accs:>28}{times:>32}")
    median = result["ratio_median"]
    print(f"recipe / raw time to {result['target']:.3f}: median {median:.3f}" if median else "a path missed the target")


if __name__ == "__main__":
    main()
