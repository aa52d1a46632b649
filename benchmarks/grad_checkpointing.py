"""Gradient checkpointing: the time and memory of a training step with and without ``grad_checkpointing=True``.

    python benchmarks/grad_checkpointing.py                          # CPU: resnet20_cifar, vit_tiny_patch4_32, GPT
    python benchmarks/grad_checkpointing.py --threads 1              # steadier times on a CPU shared with others
    python benchmarks/grad_checkpointing.py --models resnet56_cifar --batch_size 64 --steps 10
    python benchmarks/grad_checkpointing.py --device cuda --batch_size 256 --steps 20
    python benchmarks/grad_checkpointing.py --quick --out /tmp/grad_checkpointing.json   # seconds: the test's settings

For each model, two copies with the same weights (one with ``grad_checkpointing=True``) train on the same batch:
forward, the task's loss, backward, an AdamW step. After ``--warmup`` steps each (AdamW's state is then allocated),
``--steps`` steps are timed alternately, one of each model in turn, so both see the same machine state; the step
time is the median. A language model gets random tokens of its full ``block_size``; the others their
``example_batch``.

Memory is counted above what was live when the step started (parameters, AdamW's state and the batch), in one more
step per model: "saved" is what is live when the forward ends (the loss and what autograd kept for the backward:
every activation without checkpointing, only the blocks' inputs and what lies outside the blocks with it), "peak" is
the most live at any moment of the step (activations, recomputed ones included, gradients, optimizer temporaries).
On CUDA both come from ``torch.cuda.memory_allocated`` and ``torch.cuda.max_memory_allocated``. On CPU they come
from ``torch.profiler`` with ``profile_memory=True``: every allocation and free of the CPU allocator during the step,
summed in time order; "saved" is the running sum at an instant event recorded between forward and backward, "peak"
its maximum. Both count the allocator's tensor bytes, not the process's resident memory.

Prints a table and writes ``benchmarks/results/grad_checkpointing.json`` (one row per model and mode, each with the
command, machine, versions and date). As for the other speed benchmarks, the rows have no ``what``/``value``, so
docs/results.md leaves them out; docs/performance.md quotes the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date
from importlib.metadata import version
from typing import Any

import torch
from _timing import RESULTS, machine, write_json
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

import zoo

DEFAULT_MODELS = ("resnet20_cifar", "vit_tiny_patch4_32", "gpt_shakespeare_char")
QUICK_MODELS = ("resnet20_cifar", "vit_tiny_patch4_32", "gpt_test")
MODES = ("off", "on")  # grad_checkpointing
FORWARD_END = "grad_checkpointing: forward end"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", help=f"comma-separated ResNet, ViT or GPT presets; default {','.join(DEFAULT_MODELS)}"
    )
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model and mode")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model and mode first")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help=f"{','.join(QUICK_MODELS)} by default, batch 2, 1 step")
    parser.add_argument("--out", default=str(RESULTS / "grad_checkpointing.json"))
    args = parser.parse_args(argv)
    models = args.models or ",".join(QUICK_MODELS if args.quick else DEFAULT_MODELS)
    args.models = [name.strip() for name in models.split(",") if name.strip()]
    if args.quick:
        args.batch_size, args.steps, args.warmup = 2, 1, 1
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch_size must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return args


def build(name: str, checkpointing: bool, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    try:
        return zoo.create_model(name, grad_checkpointing=checkpointing)
    except TypeError as error:
        raise SystemExit(
            f"error: {name} has no grad_checkpointing option (ResNet, ViT and GPT presets do): {error}"
        ) from None


def make_batch(model: nn.Module, batch_size: int, seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    if hasattr(model, "block_size") and hasattr(model, "vocab_size"):  # a language model: full-length sequences
        ids = torch.randint(0, model.vocab_size, (batch_size, model.block_size + 1), generator=generator)
        return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()  # (B, T) inputs and next-token targets
    return model.example_batch(batch_size, generator)


Step = Callable[[Callable[[], None] | None], None]


def make_step(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> Step:
    """One training step: forward, the task's loss, backward, AdamW; gradients freed afterwards. A step calls
    ``between`` (when given) after the forward, before the backward."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    device_type = batch[0].device.type

    def step(between: Callable[[], None] | None = None) -> None:
        loss = model.batch_loss(batch)
        if between is not None:
            between()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device_type == "cuda":
            torch.cuda.synchronize()

    return step


def memory(step: Step, device: str) -> tuple[int, int]:
    """Bytes live after the forward (what it kept for the backward) and the most bytes live at once during ``step``,
    both above what was allocated when it started (see the module docstring)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        after_forward = []
        step(lambda: after_forward.append(torch.cuda.memory_allocated() - start))
        return after_forward[0], torch.cuda.max_memory_allocated() - start
    from torch._C._profiler import _EventType

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(_mark_forward_end)
    allocations, boundary, stack = [], None, list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            allocations.append(node)
        elif node.name == FORWARD_END:
            boundary = node.start_time_ns
        stack.extend(node.children)
    live = peak = saved = 0
    for node in sorted(allocations, key=lambda node: node.start_time_ns):
        live += node.extra_fields.alloc_size  # negative for a free
        peak = max(peak, live)
        if node.start_time_ns < boundary:
            saved = live
    return saved, peak


def _mark_forward_end() -> None:
    with record_function(FORWARD_END):  # an instant in the profile: where the forward ends and the backward starts
        pass


def measure(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Both modes of one model, timed alternately; one result per mode."""
    models = {mode: build(name, mode == "on", args.seed) for mode in MODES}
    models["on"].load_state_dict(models["off"].state_dict())
    batch = tuple(t.to(args.device) for t in make_batch(models["off"], args.batch_size, args.seed + 1))
    steps = {}
    for mode, model in models.items():
        model.to(args.device).train()
        steps[mode] = make_step(model, batch)
        for _ in range(args.warmup):
            steps[mode]()
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.steps):
        for mode in MODES:
            start = time.perf_counter()
            steps[mode]()
            times[mode].append(time.perf_counter() - start)
    saved, peaks = zip(*(memory(steps[mode], args.device) for mode in MODES), strict=True)
    saved, peaks = dict(zip(MODES, saved, strict=True)), dict(zip(MODES, peaks, strict=True))
    medians = {mode: statistics.median(times[mode]) for mode in MODES}
    return [
        {
            "model": name,
            "mode": mode,
            "grad_checkpointing": mode == "on",
            "params": sum(p.numel() for p in models[mode].parameters()),
            "batch_shape": list(batch[0].shape),
            "step_ms": 1000 * medians[mode],
            "step_ms_all": [1000 * t for t in times[mode]],
            "saved_mb": saved[mode] / 2**20,
            "peak_mb": peaks[mode] / 2**20,
            "time_ratio": medians[mode] / medians["off"],
            "saved_ratio": saved[mode] / saved["off"],
            "peak_ratio": peaks[mode] / peaks["off"],
        }
        for mode in MODES
    ]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = " ".join(["python", "benchmarks/grad_checkpointing.py", *(sys.argv[1:] if argv is None else argv)])
    info = machine()
    where = f"{info['cpu']} ({info['cores']} cores, {info['threads']} threads), {info['gpu'] or 'CPU'}"
    stamp = {
        "command": command,
        "machine": where,
        "versions": {package: version(package) for package in ("torch", "lightning")},
        "date": date.today().isoformat(),
    }
    header = f"{'model':<24}{'mode':<6}{'step ms':>10}{'saved MB':>10}{'peak MB':>10}"
    print(f"{header}{'time x':>8}{'saved x':>9}{'peak x':>8}")
    rows = []
    for name in args.models:
        for row in measure(name, args):
            if row["grad_checkpointing"]:  # a row of the results page: the trade against the same model without
                row["what"] = (
                    f"{name} with gradient checkpointing against without, batch {row['batch_shape'][0]}: peak memory "
                    f"{row['peak_mb']:.1f} MB against {row['peak_mb'] / row['peak_ratio']:.1f} MB, step time"
                )
                row["value"] = f"{row['peak_ratio']:.2f}x memory, {row['time_ratio']:.2f}x time"
            rows.append(dict(row, **stamp))
            print(
                f"{name:<24}{row['mode']:<6}{row['step_ms']:>10.1f}{row['saved_mb']:>10.1f}{row['peak_mb']:>10.1f}"
                f"{row['time_ratio']:>8.2f}{row['saved_ratio']:>9.3f}{row['peak_ratio']:>8.3f}",
                flush=True,
            )
    result = {
        **stamp,
        "machine": info,
        "device": args.device,
        "settings": {
            "batch_size": args.batch_size,
            "steps": args.steps,
            "warmup": args.warmup,
            "seed": args.seed,
            "threads": torch.get_num_threads(),
            "optimizer": "AdamW, lr 1e-4",
            "memory": "torch.cuda.memory_allocated after the forward, max_memory_allocated; above the step's start"
            if args.device == "cuda"
            else "torch.profiler CPU allocations and frees summed in time order: after the forward, maximum",
        },
        "rows": rows,
    }
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
