"""The character GPT recipe against a hand-written training loop of the same model, side by side.

    python benchmarks/lm_vs_loop.py                       # 2,000 steps, 2 alternating rounds (about 8 minutes)
    python benchmarks/lm_vs_loop.py --loop_fused          # the loop with the recipe's fused AdamW
    python benchmarks/lm_vs_loop.py --paired --rounds 4   # both at once, a core and a thread each
    python benchmarks/lm_vs_loop.py --steps 200 --rounds 1 --out /tmp/q.json   # a quick check
    python benchmarks/lm_vs_loop.py -- --trainer.limit_val_batches 20        # recipe overrides after "--"

Both train nanoGPT's CPU configuration (4 layers, 4 heads, width 128, block 64, batch 12) on Tiny Shakespeare for the
same steps with the same schedule (AdamW, weight decay 0.1 on matrices only, 100 warmup steps, cosine to a tenth of
1e-3, gradient clipping at 1.0), each in its own process, in alternating rounds:

- the loop is written as nanoGPT's ``train.py`` is: random windows of the first 90% of the text, an estimate of the
  train and validation losses on 20 random batches each every 250 steps, a checkpoint of model and optimizer
  (``ckpt.pt``) whenever the validation estimate improves, no framework, and AdamW as nanoGPT builds it on a CPU
  (PyTorch's per-tensor loop; ``--loop_fused`` gives it the fused kernel the recipe uses). Its time runs from the
  parent's start of it to its exit, less its validation loss on the whole validation text, which it computes after
  its last step, untimed, to compare the models;
- the recipe is ``python -m recipes.shakespeare_char_gpt fit --trainer.max_steps <steps>`` with its own defaults:
  its time is the whole process (start-up, validation, the test after fit).

Both sides' CPU time (user and system) is reported beside the wall time. With ``--paired`` the two run at the same
time, each pinned to its own core with one thread (the cores swap every round), so that the shared machine's drift
falls on both. Prints the rounds and writes
``benchmarks/results/lm_vs_loop.json`` (``lm_vs_loop_fused.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import RESULTS, machine, result_row, run_child, write_json

REPO = Path(__file__).resolve().parents[1]
TEXT = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"

LOOP = r"""
import json, math, sys, time
import torch
import torch.nn.functional as F
import zoo

path, steps, fused = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "fused"
torch.manual_seed(42)
text = open(path, encoding="utf-8").read()
vocab = "".join(sorted(set(text)))
table = {c: i for i, c in enumerate(vocab)}
ids = torch.tensor([table[c] for c in text], dtype=torch.long)
n_train = len(ids) - round(len(ids) * 0.1)
train, val = ids[:n_train], ids[n_train:]
block, batch = 64, 12
model = zoo.GPT(vocab_size=len(vocab), block_size=block, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
decay = [p for p in model.parameters() if p.ndim >= 2]
rest = [p for p in model.parameters() if p.ndim < 2]
groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
optimizer = torch.optim.AdamW(groups, lr=1e-3, fused=fused or None)  # nanoGPT fuses on CUDA only
lr, min_lr, warmup = 1e-3, 1e-4, 100

def rate(step):
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))

def get_batch(data):
    starts = torch.randint(len(data) - block, (batch,))
    x = torch.stack([data[s : s + block] for s in starts])
    y = torch.stack([data[s + 1 : s + 1 + block] for s in starts])
    return x, y

@torch.no_grad()
def estimate():
    model.eval()
    out = {}
    for name, data in (("train", train), ("val", val)):
        batches = [get_batch(data) for _ in range(20)]
        out[name] = sum(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item() for x, y in batches) / 20
    model.train()
    return out

best_val = float("inf")
for step in range(steps):
    if step % 250 == 0 or step == steps - 1:
        losses = estimate()
        print(step, losses, flush=True)
        if step > 0 and losses["val"] < best_val:  # nanoGPT saves model and optimizer when validation improves
            best_val = losses["val"]
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iter_num": step}
            torch.save({**state, "best_val_loss": best_val}, "ckpt.pt")
    for group in optimizer.param_groups:
        group["lr"] = rate(step)
    x, y = get_batch(train)
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
trained, trained_cpu = time.time(), time.process_time()
model.eval()
with torch.no_grad():  # untimed: the loss on the whole validation text, windows as the datamodule cuts them
    starts = torch.arange(0, len(val) - 1, block)
    total, count = 0.0, 0
    for chunk in starts.split(batch):
        x = torch.stack([val[s : s + block] for s in chunk if s + block < len(val)])
        y = torch.stack([val[s + 1 : s + 1 + block] for s in chunk if s + block < len(val)])
        total += F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
untimed = {"untimed_s": time.time() - trained, "untimed_cpu_s": time.process_time() - trained_cpu}
print("RESULT " + json.dumps({**untimed, "val_loss": total / count}))
"""

RECIPE = r"""
import json, sys
from recipes import shakespeare_char_gpt
cli = shakespeare_char_gpt.main(["fit", *sys.argv[1:]])
metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith(("val/", "test/"))}
print("RESULT " + json.dumps(metrics))
"""


def _run(code: str, args: list[str], cwd: str) -> tuple[float, float, dict]:
    """A side's wall and CPU seconds (the loop's less its untimed final evaluation) and what it reported. CPU time
    (user and system, every thread) is what the process itself used: it leaves out the time the shared machine gave
    to others, which moves wall times by more than the gap measured."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    found, seconds = run_child(code, args, "RESULT", cwd=cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds - found.get("untimed_s", 0.0), cpu - found.get("untimed_cpu_s", 0.0), found


def _run_paired(sides: list[tuple[str, str, list[str]]], cwd: str, swap: bool) -> dict[str, tuple[float, float, dict]]:
    """Both sides at once, each pinned to a core of its own with one thread: the shared machine's drift, which moves
    one process's time by more than the gap measured, then falls on both alike. ``swap`` exchanges the cores."""
    cores = sorted(os.sched_getaffinity(0))[:2]
    if len(cores) < 2:
        sys.exit("--paired needs two cores")
    cores = cores[::-1] if swap else cores
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started, running, results = time.perf_counter(), {}, {}
    for (name, code, args), core in zip(sides, cores, strict=True):
        out = open(Path(cwd) / f"{name}.out", "w+")  # noqa: SIM115 (closed once read); a file: no side blocks on a pipe
        process = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda core=core: os.sched_setaffinity(0, {core}),
        )
        running[process.pid] = (name, process, out)
    while running:
        pid, status, usage = os.wait4(-1, 0)
        name, process, out = running.pop(pid)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds, cpu = time.perf_counter() - started, usage.ru_utime + usage.ru_stime
        out.seek(0)
        text = out.read()
        out.close()
        lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
        if process.returncode or not lines:
            sys.exit(f"{name} failed (exit {process.returncode}):\n{text[-4000:]}")
        found = json.loads(lines[-1].removeprefix("RESULT "))
        results[name] = (seconds - found.get("untimed_s", 0.0), cpu - found.get("untimed_cpu_s", 0.0), found)
    return results


def main() -> None:
    argv = sys.argv[1:]
    recipe_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--loop_fused",
        action="store_true",
        help="give the loop PyTorch's fused AdamW, as the recipe has, instead of nanoGPT's CPU choice (the per-tensor "
        "loop): what is left is the framework's own cost",
    )
    parser.add_argument(
        "--paired",
        action="store_true",
        help="run both sides at once, each on its own core with one thread, instead of one after the other",
    )
    parser.add_argument("--text", default=str(TEXT))
    parser.add_argument("--out", default=None, help="default: results/lm_vs_loop.json (_fused.json with --loop_fused)")
    options = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    suffix = ("_fused" if options.loop_fused else "") + ("_paired" if options.paired else "")
    options.out = options.out or str(RESULTS / f"lm_vs_loop{suffix}.json")
    if not Path(options.text).is_file():
        sys.exit(f"Tiny Shakespeare not found at {options.text}: put input.txt there (see ../shared/data)")
    rounds = []
    with tempfile.TemporaryDirectory() as work:
        recipe = [
            f"--trainer.max_steps={options.steps}",
            f"--data.path={options.text}",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={work}",
            *recipe_args,
        ]
        loop = [options.text, str(options.steps), "fused" if options.loop_fused else "default"]
        for index in range(options.rounds):
            sides = [("loop", LOOP, loop), ("recipe", RECIPE, recipe)]
            order = sides if index % 2 == 0 else sides[::-1]
            if options.paired:
                times = _run_paired(sides, work, swap=index % 2 == 1)
            else:
                times = {name: _run(code, args, work) for name, code, args in order}
            row = {
                "loop_s": round(times["loop"][0], 1),
                "recipe_s": round(times["recipe"][0], 1),
                "ratio": round(times["recipe"][0] / times["loop"][0], 3),
                "loop_cpu_s": round(times["loop"][1], 1),
                "recipe_cpu_s": round(times["recipe"][1], 1),
                "cpu_ratio": round(times["recipe"][1] / times["loop"][1], 3),
                "loop_val_loss": times["loop"][2]["val_loss"],
                # The recipe tests on its validation text (test_fraction 0): the loop's loss of the same windows.
                "recipe_val_loss": times["recipe"][2].get("test/loss"),
            }
            rounds.append(row)
            print(json.dumps(row))
    ratio = statistics.median(row["ratio"] for row in rounds)
    cpu_ratio = statistics.median(row["cpu_ratio"] for row in rounds)
    recipe_losses = [row["recipe_val_loss"] for row in rounds if row["recipe_val_loss"] is not None]
    recipe_loss = f"{statistics.median(recipe_losses):.3f}" if recipe_losses else "none (no test ran)"
    info = machine()
    command = f"python benchmarks/lm_vs_loop.py --steps {options.steps} --rounds {options.rounds}"
    command += (" --loop_fused" if options.loop_fused else "") + (" --paired" if options.paired else "")
    against = "a hand-written loop with fused AdamW" if options.loop_fused else "a hand-written loop"
    mode = "both at once, a core and a thread each" if options.paired else "one after the other"
    if recipe_args:
        command += " -- " + " ".join(recipe_args)
    rows = [
        result_row(
            f"shakespeare_char_gpt, {options.steps} steps, {mode}: whole recipe process over {against} of the "
            f"same model (median of {len(rounds)} rounds; loop {statistics.median(r['loop_s'] for r in rounds):.0f} s, "
            f"val loss {statistics.median(r['loop_val_loss'] for r in rounds):.3f} against the recipe's "
            f"{recipe_loss})",
            f"{ratio:.2f}x",
            command,
            info,
        ),
        result_row(
            f"shakespeare_char_gpt, {options.steps} steps, {mode}: CPU time (user and system) of the whole recipe "
            f"process over {against}'s (median of {len(rounds)} rounds)",
            f"{cpu_ratio:.2f}x",
            command,
            info,
        ),
    ]
    result = {"rows": rows, "rounds": rounds, "steps": options.steps, "loop_fused": options.loop_fused}
    write_json({**result, "recipe_args": recipe_args}, options.out)
    print(f"recipe / loop: wall {ratio:.3f}, CPU {cpu_ratio:.3f} (medians of {len(rounds)})")


if __name__ == "__main__":
    main()
