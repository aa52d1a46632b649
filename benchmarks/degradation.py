"""Plain against residual networks of the same depth (He et al., 2016, Sec. 4.2): gradients at initialization and
accuracy after a short run.

    python benchmarks/degradation.py                       # digits, depths 8/20/56, 300 steps each: a few CPU minutes
    python benchmarks/degradation.py --depths 20,56,110 --steps 600
    python benchmarks/degradation.py --data cifar10 --data_dir ../shared/data --train_size 10000 --steps 400
    python benchmarks/degradation.py --quick --out /tmp/degradation.json   # seconds: the test's settings

Each depth ``6n + 2`` is the CIFAR ResNet of He et al. (a 16-wide 3x3 stem, three stages of ``n`` basic blocks 16,
32 and 64 wide, global pooling, a linear head; the ``resnet20_cifar`` family) and the same network with
``residual=False``: the same convs, norms and head without the shortcuts. Both start from the same seed.

- **Gradients at initialization**: the L2 norm of each conv weight's gradient of the cross-entropy on one training
  batch (training mode, so BatchNorm uses the batch's statistics), in depth order; the table shows the first conv
  (the stem), the middle one and the last, and first/last.
- **A short run**: SGD (Nesterov momentum 0.9, weight decay 5e-4) with a one-cycle schedule, batches drawn at random
  with a fixed seed, no augmentation; then the loss and accuracy over the whole training set and the test set, in
  eval mode. Degradation shows as a deeper plain net ending with a *higher training* loss than a shallower one,
  while the residual nets keep improving with depth.

Prints a table and writes ``benchmarks/results/degradation.json`` (every net's numbers, the per-layer gradient norms,
the settings, and one results row per depth for docs/results.md).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Sequence
from datetime import date
from importlib.metadata import version
from typing import Any

import torch
import torch.nn.functional as F
from _timing import RESULTS, machine, result_row, write_json
from torch import nn

import zoo
from datamodules import CIFAR10DataModule, DigitsDataModule

Data = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", default="8,20,56", help="comma-separated depths 6n+2")
    parser.add_argument("--data", default="digits", choices=["digits", "cifar10"])
    parser.add_argument("--data_dir", default="data", help="CIFAR-10 folder (digits ship with scikit-learn)")
    parser.add_argument("--train_size", type=int, default=0, help="a random subset of N training images (0: all)")
    parser.add_argument("--test_size", type=int, default=0, help="a random subset of N test images (0: all)")
    parser.add_argument("--steps", type=int, default=300, help="training steps per net")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1, help="the one-cycle peak")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="depths 8,14, 5 steps of batch 32, 256 images a split")
    parser.add_argument("--out", default=str(RESULTS / "degradation.json"))
    args = parser.parse_args(argv)
    depths = [int(depth) for depth in args.depths.split(",") if depth.strip()]
    if any(depth < 8 or (depth - 2) % 6 for depth in depths):
        parser.error(f"depths must be 6n + 2 with n >= 1 (8, 14, 20, ...), got {args.depths}")
    args.depths = [8, 14] if args.quick else depths
    if args.quick:
        args.steps, args.batch_size, args.train_size, args.test_size = 5, 32, 256, 256
    return args


def load_data(args: argparse.Namespace) -> Data:
    """Normalized float images and labels: train, then test."""
    data = (DigitsDataModule if args.data == "digits" else CIFAR10DataModule)(data_dir=args.data_dir)
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    generator = torch.Generator().manual_seed(args.seed)
    arrays = []
    for train, size in ((True, args.train_size), (False, args.test_size)):
        images, labels = data.load_arrays(train)
        if size:  # a random subset: the files are ordered by class
            index = torch.randperm(len(images), generator=generator)[:size]
            images, labels = images[index], labels[index]
        arrays += [(images.float() / 255 - mean) / std, labels.long()]
    return tuple(arrays)


def build(depth: int, residual: bool, data: Data, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    blocks = (depth - 2) // 6
    channels, size = data[0].shape[1], data[0].shape[-1]
    return zoo.create_model(
        "resnet20_cifar", layers=(blocks,) * 3, residual=residual, in_channels=channels, img_size=size
    )


def init_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """The gradient norm of every conv weight outside the shortcuts, in depth order, at initialization."""
    model = copy.deepcopy(model).train()  # the batch would move the BatchNorm statistics of the net to train
    F.cross_entropy(model(x), y).backward()
    return {
        name: param.grad.norm().item()
        for name, param in model.named_parameters()
        if param.dim() == 4 and "shortcut" not in name
    }


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over ``x`` in eval mode."""
    model.eval()
    loss = correct = 0.0
    for start in range(0, len(x), 512):
        logits = model(x[start : start + 512])
        loss += F.cross_entropy(logits, y[start : start + 512], reduction="sum").item()
        correct += (logits.argmax(1) == y[start : start + 512]).sum().item()
    return loss / len(x), correct / len(x)


def train(model: nn.Module, data: Data, args: argparse.Namespace) -> list[float]:
    x, y = data[0], data[1]
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps)
    generator = torch.Generator().manual_seed(args.seed)
    losses = []
    model.train()
    for _ in range(args.steps):
        index = torch.randint(0, len(x), (args.batch_size,), generator=generator)
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def measure(depth: int, residual: bool, data: Data, args: argparse.Namespace) -> dict[str, Any]:
    model = build(depth, residual, data, args.seed)
    generator = torch.Generator().manual_seed(args.seed + 1)
    index = torch.randperm(len(data[0]), generator=generator)[: args.batch_size]
    norms = init_grad_norms(model, data[0][index], data[1][index])
    values = list(norms.values())
    start = time.perf_counter()
    losses = train(model, data, args)
    wall = time.perf_counter() - start
    train_loss, train_acc = evaluate(model, data[0], data[1])
    test_loss, test_acc = evaluate(model, data[2], data[3])
    return {
        "depth": depth,
        "net": "residual" if residual else "plain",
        "params": sum(p.numel() for p in model.parameters()),
        "grad_first": values[0],
        "grad_middle": values[len(values) // 2],
        "grad_last": values[-1],
        "grad_first_to_last": values[0] / values[-1],
        "grad_norms": norms,
        "last_step_losses": losses[-10:],
        "train_loss": train_loss,
        "train_acc": train_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "train_s": wall,
    }


def print_table(results: list[dict[str, Any]]) -> None:
    header = f"{'depth':>5} {'net':<9}{'params':>9} {'grad first':>11}{'middle':>10}{'last':>10}{'first/last':>11}"
    print(header + f"{'train loss':>11}{'train acc':>10}{'test acc':>9}{'time':>8}")
    for r in results:
        print(
            f"{r['depth']:>5} {r['net']:<9}{r['params']:>9,} {r['grad_first']:>11.3g}{r['grad_middle']:>10.3g}"
            f"{r['grad_last']:>10.3g}{r['grad_first_to_last']:>11.3g}{r['train_loss']:>11.4f}"
            f"{100 * r['train_acc']:>9.2f}%{100 * r['test_acc']:>8.2f}%{r['train_s']:>7.1f}s"
        )


def rows(results: list[dict[str, Any]], args: argparse.Namespace, command: str, info: dict[str, Any]) -> list[dict]:
    """One results row per depth: plain against residual."""
    out = []
    for depth in args.depths:
        plain, residual = (
            next(r for r in results if r["depth"] == depth and r["net"] == net) for net in ("plain", "residual")
        )
        what = (
            f"plain vs residual net of {depth} layers on {args.data}, {args.steps} SGD steps of {args.batch_size}: "
            "test accuracy (training loss)"
        )
        value = (
            f"plain {100 * plain['test_acc']:.2f}% ({plain['train_loss']:.3f}), residual "
            f"{100 * residual['test_acc']:.2f}% ({residual['train_loss']:.3f})"
        )
        out.append(result_row(what, value, command, info))
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    command = " ".join(["python", "benchmarks/degradation.py", *(sys.argv[1:] if argv is None else argv)])
    data = load_data(args)
    results = []
    for depth in args.depths:
        for residual in (False, True):
            results.append(result := measure(depth, residual, data, args))
            print(f"{depth:>3} layers {result['net']:<8} done in {result['train_s']:.1f} s", flush=True)
    print_table(results)
    info = machine()
    report = {
        "command": command,
        "machine": info,
        "versions": {package: version(package) for package in ("torch", "lightning")},
        "date": date.today().isoformat(),
        "settings": {
            "data": args.data,
            "train_size": len(data[0]),
            "test_size": len(data[2]),
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
            "optimizer": "SGD, Nesterov momentum 0.9, weight decay 5e-4, one-cycle",
        },
        "results": results,
        "rows": rows(results, args, command, info),
    }
    write_json(report, args.out)
    return report


if __name__ == "__main__":
    main()
