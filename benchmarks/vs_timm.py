"""Throughput of zoo models against timm's and torchvision's same architectures, side by side in one process.

    python benchmarks/vs_timm.py                                   # CPU: batch 8, fp32 and bf16 + channels-last
    python benchmarks/vs_timm.py --models resnet50 --rounds 5
    python benchmarks/vs_timm.py --device cuda --batch_size 64 --compile

Each pair is built with the same parameter count (checked), then timed in alternating rounds: ``--steps`` training
steps (forward, cross-entropy, backward, SGD step) or inference batches (eval mode, ``torch.no_grad``) of the zoo
model, then of the reference, so that both see the same machine state. The ratio is the median over rounds of each
round's zoo rate over the reference's. Settings are applied identically to both: precision (autocast), memory
format and ``torch.compile``. Prints a table and writes ``benchmarks/results/vs_timm.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from _timing import RESULTS, machine, write_json
from torch import nn

import zoo

#: zoo preset -> references: (library, name)
PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "resnet50": (("timm", "resnet50"), ("torchvision", "resnet50")),
    "vit_small_patch16_224": (("timm", "vit_small_patch16_224"),),
    "efficientnet_b0": (("timm", "efficientnet_b0"), ("torchvision", "efficientnet_b0")),
}
SETTINGS = {"fp32": (False, False), "bf16+cl": (True, True)}  # name -> (bf16 autocast, channels_last)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(PAIRS), help="comma-separated zoo presets")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated of {', '.join(SETTINGS)}")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default=str(RESULTS / "vs_timm.json"))
    return parser.parse_args(argv)


def reference(library: str, name: str) -> nn.Module:
    if library == "timm":
        import timm

        return timm.create_model(name, pretrained=False, num_classes=1000)
    import torchvision

    return torchvision.models.get_model(name, weights=None, num_classes=1000)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train: bool, bf16: bool) -> Callable[[], None]:
    """One training step or one inference batch of ``model``."""
    device_type = x.device.type
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9) if train else None

    def step() -> None:
        if train:
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        else:
            with torch.no_grad(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
                model(x)
        if device_type == "cuda":
            torch.cuda.synchronize()

    return step


def rate(step: Callable[[], None], steps: int, batch_size: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def compare(name: str, ref: tuple[str, str], setting: str, train: bool, args: argparse.Namespace) -> dict[str, Any]:
    bf16, channels_last = SETTINGS[setting]
    torch.manual_seed(0)
    models = {"zoo": zoo.create_model(name, num_classes=1000), "ref": reference(*ref)}
    if count(models["zoo"]) != count(models["ref"]):
        raise SystemExit(f"error: {name} has {count(models['zoo'])} parameters, {'/'.join(ref)} {count(models['ref'])}")
    x = torch.randn(args.batch_size, 3, 224, 224, device=args.device)
    y = torch.randint(0, 1000, (args.batch_size,), device=args.device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    steps = {}
    for key, model in models.items():
        model.to(args.device).train(train)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        if args.compile:
            model.compile()
        steps[key] = make_step(model, x, y, train, bf16)
        for _ in range(2):  # warm-up (and compilation)
            steps[key]()
    rates: dict[str, list[float]] = {"zoo": [], "ref": []}
    for _ in range(args.rounds):
        for key in ("zoo", "ref"):
            rates[key].append(rate(steps[key], args.steps, args.batch_size))
    ratios = [z / r for z, r in zip(rates["zoo"], rates["ref"], strict=True)]
    return {
        "zoo": name,
        "reference": "/".join(ref),
        "setting": setting,
        "mode": "train" if train else "inference",
        "params": count(models["zoo"]),
        "zoo_per_s": rates["zoo"],
        "ref_per_s": rates["ref"],
        "ratio_per_round": ratios,
        "ratio_median": statistics.median(ratios),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    settings = [setting.strip() for setting in args.settings.split(",") if setting.strip()]
    for name in names:
        if name not in PAIRS:
            raise SystemExit(f"error: no reference for {name!r}; choose from {', '.join(PAIRS)}")
    for setting in settings:
        if setting not in SETTINGS:
            raise SystemExit(f"error: unknown setting {setting!r}; choose from {', '.join(SETTINGS)}")
    rows = []
    header = f"{'zoo model':<24}{'reference':<28}{'setting':<10}{'mode':<11}"
    print(f"{header}{'zoo img/s':>10}{'ref img/s':>10}{'ratio':>8}")
    for name in names:
        for ref in PAIRS[name]:
            for setting in settings:
                for train in (True, False):
                    row = compare(name, ref, setting, train, args)
                    rows.append(row)
                    print(
                        f"{name:<24}{row['reference']:<28}{setting:<10}{row['mode']:<11}"
                        f"{statistics.median(row['zoo_per_s']):>10.1f}{statistics.median(row['ref_per_s']):>10.1f}"
                        f"{row['ratio_median']:>8.3f}",
                        flush=True,
                    )
    ratios = [row["ratio_median"] for row in rows]
    print(f"lowest ratio {min(ratios):.3f}, median {statistics.median(ratios):.3f} (zoo / reference, same run)")
    result = {
        "machine": machine(),
        "command": " ".join(["python", "benchmarks/vs_timm.py", *(sys.argv[1:] if argv is None else argv)]),
        "device": args.device,
        "batch_size": args.batch_size,
        "compile": args.compile,
        "rows": rows,
    }
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
