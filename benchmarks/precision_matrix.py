"""Train and eval throughput under fp32, bf16 autocast, channels-last weights and torch.compile, side by side.

    python benchmarks/precision_matrix.py                                  # the default models, CPU
    python benchmarks/precision_matrix.py --models resnet18_cifar --steps 10
    python benchmarks/precision_matrix.py --device cuda --batch_size 256   # the GPU rows

Each cell trains a fresh preset for ``--warmup + --steps`` batches under a Trainer with that column's settings: the
``precision`` flag and the :class:`callbacks.FastPath` callback the recipes take (the last column is
``-c recipes/fast.yaml``), then validates as many batches. The batches are random, in the task's own form
(``model.example_batch``), made once and held in memory, so the data pipeline costs nothing. Rates are medians of
the batches after the warm-up; the warm-up's extra time (compilation, for compiled columns) is reported apart.
Models without 4-D weights skip the channels-last columns (the last one still compiles). Prints a table and writes
``benchmarks/results/precision_matrix.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from _timing import RESULTS, StepTimer, machine, median_rate, write_json
from torch.utils.data import DataLoader

import zoo
from callbacks import FastPath

MODELS = ("resnet18_cifar", "vit_tiny_patch4_32", "cnn_bn_cifar", "lstm_shakespeare_char", "gpt_shakespeare_char")
#: column -> (precision, channels_last, compile)
CONFIGS: dict[str, tuple[str, bool, bool]] = {
    "fp32": ("32-true", False, False),
    "fp32+cl": ("32-true", True, False),
    "bf16": ("bf16-mixed", False, False),
    "bf16+cl": ("bf16-mixed", True, False),
    "bf16+cl+compile": ("bf16-mixed", True, True),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated presets")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated of {', '.join(CONFIGS)}")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3, help="batches left out of the rates (compilation)")
    parser.add_argument("--steps", type=int, default=6, help="timed batches per cell, train and eval each")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default=str(RESULTS / "precision_matrix.json"))
    return parser.parse_args(argv)


def items_per_batch(model: L.LightningModule, batch: Any) -> tuple[int, str]:
    """What a rate counts: tokens for language models, samples (images, sequences) otherwise."""
    inputs = batch[0]
    if isinstance(model, zoo.LanguageModel):
        return inputs.numel(), "tokens"
    return len(inputs), "images" if inputs.dim() == 4 else "samples"


def measure(name: str, config: str, args: argparse.Namespace) -> dict[str, Any]:
    """One cell: train then validate a fresh ``name`` under ``config``."""
    precision, channels_last, compile = CONFIGS[config]
    torch.manual_seed(0)
    model = zoo.create_model(name)
    if channels_last and not any(p.dim() == 4 for p in model.parameters()):
        if not compile:
            return {"skipped": "no 4-D weights"}
        channels_last = False  # the switch still compiles
    generator = torch.Generator().manual_seed(0)
    batches = [model.example_batch(args.batch_size, generator) for _ in range(4)]
    count, unit = items_per_batch(model, batches[0])
    total = args.warmup + args.steps
    loader = DataLoader([batches[i % len(batches)] for i in range(total)], batch_size=None)  # made batches as they are
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        precision=precision,
        max_steps=total,
        limit_val_batches=total,
        num_sanity_val_steps=0,  # fit gets no validation loader: only validate() runs eval batches
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer, FastPath(channels_last=channels_last, compile=compile)],
    )
    start = time.perf_counter()
    trainer.fit(model, train_dataloaders=loader)
    trainer.validate(model, dataloaders=loader, verbose=False)
    wall = time.perf_counter() - start
    train_rate = median_rate(timer.times, args.warmup)
    eval_rate = median_rate(timer.eval_times, args.warmup)
    return {
        "unit": unit,
        "train_per_s": train_rate * count,
        "eval_per_s": eval_rate * count,
        # time the warm-up batches took beyond as many steady ones: compilation, allocator and thread-pool warm-up
        "train_warmup_s": sum(timer.times[: args.warmup]) - args.warmup / train_rate,
        "eval_warmup_s": sum(timer.eval_times[: args.warmup]) - args.warmup / eval_rate,
        "wall_s": wall,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    configs = [config.strip() for config in args.configs.split(",") if config.strip()]
    unknown = [config for config in configs if config not in CONFIGS]
    if unknown:
        raise SystemExit(f"error: unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    for name in models:
        zoo.model_info(name)  # unknown names fail now, with close matches, not after the first model ran
    cells: dict[str, dict[str, Any]] = {}
    for name in models:
        cells[name] = {}
        for config in configs:
            cells[name][config] = cell = measure(name, config, args)
            if "skipped" not in cell:
                print(
                    f"{name:<24}{config:<17} train {cell['train_per_s']:9.1f} {cell['unit']}/s  "
                    f"eval {cell['eval_per_s']:9.1f}  warm-up {cell['train_warmup_s']:6.1f} s",
                    flush=True,
                )
    baseline = configs[0]
    for name in models:
        base = cells[name][baseline]
        for cell in cells[name].values():
            if "skipped" not in cell:
                cell["train_speedup"] = cell["train_per_s"] / base["train_per_s"]
                cell["eval_speedup"] = cell["eval_per_s"] / base["eval_per_s"]
    print_table(cells, configs, baseline)
    result = {
        "machine": machine(),
        "device": args.device,
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "steps": args.steps,
        "command": " ".join(["python", "benchmarks/precision_matrix.py", *(sys.argv[1:] if argv is None else argv)]),
        "baseline": baseline,
        "cells": cells,
    }
    write_json(result, args.out)
    return result


def print_table(cells: dict[str, dict[str, Any]], configs: list[str], baseline: str) -> None:
    """Train and eval rates per model and column, with the speed-up over ``baseline`` in brackets."""
    width = 22
    print(f"\n{'model':<24}{'':<6}" + "".join(f"{config:>{width}}" for config in configs))
    for name, row in cells.items():
        unit = next((cell["unit"] for cell in row.values() if "unit" in cell), "")
        for split in ("train", "eval"):
            line = f"{name if split == 'train' else unit + '/s':<24}{split:<6}"
            for config in configs:
                cell = row[config]
                text = "-" if "skipped" in cell else f"{cell[f'{split}_per_s']:.0f} ({cell[f'{split}_speedup']:.2f}x)"
                line += f"{text:>{width}}"
            print(line)
        warm = [f"{config} {row[config]['train_warmup_s']:.0f} s" for config in configs if "skipped" not in row[config]]
        print(f"{'':<24}{'warm':<6}  train warm-up beyond steady: {', '.join(warm)}")
    print(f"speed-ups against {baseline} in the same run")


if __name__ == "__main__":
    main()
