"""The CIFAR-10 speedrun recipe timed whole over several seeds, with accuracy against wall time and where time goes.

    python benchmarks/cifar10_speedrun.py                         # seeds 0 1 2 (about an hour on 2 cores)
    python benchmarks/cifar10_speedrun.py --seeds 0 --no-curve    # one run
    python benchmarks/cifar10_speedrun.py -- --trainer.max_steps 300   # recipe overrides after "--"
    python benchmarks/cifar10_speedrun.py --plot                  # redraw the curve from the results

Each seed is one process, ``python -m recipes.cifar10_speedrun fit --data.data_dir <data> --seed_everything <seed>``,
timed from the parent's start of it to its exit: imports, JPEG decoding, training and the test with the recipe's
6-view TTA. A timing
callback in that process notes where the time goes:

- ``startup``: from the process start to the datamodule's setup (interpreter, imports, building model and data);
- ``data``: decoding the training images (the datamodule's setup);
- ``train``: the training loop, split into ``forward`` (the training step: batch augmentation is in ``data_wait``),
  ``backward``, ``optimizer`` (the step, Lookahead and the other batch-end callbacks) and ``data_wait`` (fetching and
  augmenting the next batch);
- ``test``: decoding the test images and the test with the 6-view TTA; ``other``: the rest (teardown, checkpoints).

Nothing is compiled: on this CPU ``torch.compile`` made the network's steps slower than bf16 eager.

The first seed also saves its weights after every epoch; after all runs (untimed) each of those is tested, giving
test accuracy against the wall time at which the epoch ended. Prints a table and writes
``benchmarks/results/cifar10_speedrun.json`` and the curve, ``docs/speedrun/cifar10_speedrun_curve.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from _timing import RESULTS, machine, result_row, run_child, write_json

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CURVE_PNG = REPO / "docs" / "speedrun" / "cifar10_speedrun_curve.png"
STEPS_PER_EPOCH = 49  # 50,000 images in batches of 1,024

CHILD = r"""
import time
STARTED = time.time()
import json, sys
import lightning as L


class PhaseTimer(L.Callback):
    # Wall clock of each phase of the run, from the hooks around it.
    def __init__(self):
        self.marks, self.sums, self.epoch_ends, self._t = {}, dict.fromkeys(("forward", "backward", "optimizer",
                                                                              "data_wait"), 0.0), [], None

    def _lap(self, phase):
        now = time.time()
        if self._t is not None and phase:
            self.sums[phase] += now - self._t
        self._t = now

    def on_train_start(self, trainer, pl_module):
        self.marks["train_start"] = time.time()
        self._t = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._lap("data_wait")

    def on_before_backward(self, trainer, pl_module, loss):
        self._lap("forward")

    def on_after_backward(self, trainer, pl_module):
        self._lap("backward")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._lap("optimizer")

    def on_train_epoch_end(self, trainer, pl_module):
        self.epoch_ends.append([trainer.global_step, time.time() - STARTED])
        self._t = None

    def on_train_end(self, trainer, pl_module):
        self.marks["train_end"] = time.time()

    def on_test_start(self, trainer, pl_module):
        self.marks["test_start"] = time.time()

    def on_test_end(self, trainer, pl_module):
        self.marks["test_end"] = time.time()


TIMER = PhaseTimer()
from recipes import cifar10_speedrun
from recipes.cli import ZooCLI

original = ZooCLI.instantiate_trainer


def instantiate_trainer(self, **kwargs):
    trainer = original(self, **kwargs)
    trainer.callbacks.append(TIMER)
    return trainer


ZooCLI.instantiate_trainer = instantiate_trainer
# The datamodule's setup is timed on its own: decoding the JPEGs is the data phase.
from datamodules import CIFAR10DataModule
setup = CIFAR10DataModule.setup


def timed_setup(self, stage=None):
    stage, started = getattr(stage, "value", stage), time.time()  # (the Trainer passes its TrainerFn)
    setup(self, stage)
    TIMER.marks[f"data_{stage}"] = TIMER.marks.get(f"data_{stage}", 0.0) + time.time() - started
    TIMER.marks.setdefault(f"data_{stage}_start", started)


CIFAR10DataModule.setup = timed_setup
cli = cifar10_speedrun.main(["fit", *sys.argv[1:]])
metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith(("train/", "test/"))}
print("RESULT " + json.dumps({"started": STARTED, "ended": time.time(), "marks": TIMER.marks, "sums": TIMER.sums,
                              "epoch_ends": TIMER.epoch_ends, "metrics": metrics, "steps": cli.trainer.global_step}))
"""

EVAL = r"""
import json, sys, torch
from datamodules import CIFAR10DataModule
from zoo import load_from_checkpoint

data = CIFAR10DataModule(sys.argv[1], batch_size=1000, num_workers=0)
data.setup("test")
rows = []
for path in sys.argv[2:]:
    model = load_from_checkpoint(path).eval()
    right = {"none": 0, "flip": 0}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for x, y in data.test_dataloader():
            logits = model(x).float()
            right["none"] += int((logits.argmax(-1) == y).sum())
            mirrored = model(x.flip(-1)).float()
            flip = logits.log_softmax(-1).exp() + mirrored.log_softmax(-1).exp()
            right["flip"] += int((flip.argmax(-1) == y).sum())
    n = len(data.datasets["test"])
    rows.append({"checkpoint": path, "acc": right["none"] / n, "acc_flip_tta": right["flip"] / n})
print("RESULT " + json.dumps(rows))
"""


def _phases(found: dict, wall: float) -> dict[str, float]:
    """Seconds per phase of one run (see the module doc); they add up to ``wall``."""
    marks, sums = found["marks"], found["sums"]
    startup = marks["data_fit_start"] - found["started"]
    data = marks["data_fit"]
    train = marks["train_end"] - marks["train_start"]
    test = marks["test_end"] - marks["test_start"] + marks.get("data_test", 0.0)
    phases = {"startup": startup, "data": data, "train": train, **sums, "test": test}
    phases["other"] = wall - startup - data - train - test
    return {key: round(value, 1) for key, value in phases.items()}


def plot_curve(result: dict, path: Path = CURVE_PNG) -> Path:
    """Test accuracy against wall time of the first seed's epochs (with and without flip TTA), and each seed's final
    accuracy at its whole process time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve, runs = result["curve"], result["runs"]
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    minutes = [point["wall_s"] / 60 for point in curve]
    axis.plot(minutes, [100 * p["test_acc"] for p in curve], "o-", label=f"seed {runs[0]['seed']}, after each epoch")
    axis.plot(minutes, [100 * p["test_acc_flip_tta"] for p in curve], "s--", label="the same weights, flip TTA")
    axis.plot(
        [r["wall_s"] / 60 for r in runs],
        [100 * r["test_acc"] for r in runs],
        "k*",
        markersize=11,
        label="each seed's result (6-view TTA), whole process",
    )
    axis.axhline(90.5, color="grey", linewidth=0.8)
    axis.axvline(20, color="grey", linewidth=0.8)
    axis.set(
        xlabel="wall time since the process started (minutes)",
        ylabel="CIFAR-10 test accuracy (%)",
        ylim=(max(50.0, min(100 * p["test_acc"] for p in curve) - 2) if curve else 50.0, 92.0),
        xlim=(0, 21),
    )
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"wrote {path}")
    return path


def main() -> None:
    argv = sys.argv[1:]
    recipe_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data_dir", default=str(DATA))
    parser.add_argument("--no-curve", dest="curve", action="store_false", help="no per-epoch weights and tests")
    parser.add_argument("--out", default=str(RESULTS / "cifar10_speedrun.json"))
    parser.add_argument("--plot", action="store_true", help="only draw the curve of the results in --out")
    options = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if options.plot:
        plot_curve(json.loads(Path(options.out).read_text()))
        return
    if not (Path(options.data_dir) / "cifar10-jpeg-train.tar.gz").is_file():
        sys.exit(f"CIFAR-10 JPEG tarballs not found in {options.data_dir} (see ../shared/data)")
    runs, curve = [], []
    with tempfile.TemporaryDirectory() as work:
        for index, seed in enumerate(options.seeds):
            args = [
                f"--data.data_dir={options.data_dir}",
                f"--seed_everything={seed}",
                "--trainer.enable_progress_bar=false",
                f"--trainer.logger.init_args.save_dir={work}/seed{seed}",
            ]
            if options.curve and index == 0:  # the weights after every epoch, for the curve
                args += [
                    "--trainer.callbacks+=callbacks.PortableModelCheckpoint",
                    f"--trainer.callbacks.dirpath={work}/epochs",
                    "--trainer.callbacks.save_top_k=-1",
                    f"--trainer.callbacks.every_n_train_steps={STEPS_PER_EPOCH}",
                    "--trainer.callbacks.filename=step{step:03d}",
                    "--trainer.callbacks.auto_insert_metric_name=false",
                ]
            found, wall = run_child(CHILD, args + recipe_args, "RESULT", cwd=REPO)
            run = {
                "seed": seed,
                "wall_s": round(wall, 1),
                "test_acc": found["metrics"]["test/acc"],
                "steps": found["steps"],
                "phases": _phases(found, wall),
                "epoch_ends": found["epoch_ends"],
            }
            runs.append(run)
            print(json.dumps(run))
            if options.curve and index == 0:
                paths = sorted(str(path) for path in Path(work, "epochs").glob("step*.ckpt"))
                tested, _ = run_child(EVAL, [options.data_dir, *paths], "RESULT", cwd=REPO)
                ends = dict((step, seconds) for step, seconds in found["epoch_ends"])
                for row in tested:
                    step = int(Path(row["checkpoint"]).stem.removeprefix("step"))
                    curve.append(
                        {
                            "epoch": step / STEPS_PER_EPOCH,
                            "step": step,
                            "wall_s": round(ends[step], 1),
                            "test_acc": row["acc"],
                            "test_acc_flip_tta": row["acc_flip_tta"],
                        }
                    )
    accs = [run["test_acc"] for run in runs]
    walls = [run["wall_s"] for run in runs]
    mean = statistics.mean(accs)
    spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"\n{'seed':>5} {'test acc':>9} {'wall':>8} " + " ".join(f"{k:>9}" for k in runs[0]["phases"]))
    for run in runs:
        print(
            f"{run['seed']:>5} {run['test_acc']:>9.4f} {run['wall_s']:>7.0f}s "
            + " ".join(f"{v:>8.0f}s" for v in run["phases"].values())
        )
    if curve:
        print(f"\n{'epoch':>6} {'wall':>7} {'test acc':>9} {'flip TTA':>9}")
        for point in curve:
            print(
                f"{point['epoch']:>6.1f} {point['wall_s']:>6.0f}s {point['test_acc']:>9.4f} "
                f"{point['test_acc_flip_tta']:>9.4f}"
            )
    info = machine()
    command = "python benchmarks/cifar10_speedrun.py --seeds " + " ".join(map(str, options.seeds))
    if recipe_args:
        command += " -- " + " ".join(recipe_args)
    rows = [
        result_row(
            "cifar10_speedrun, test accuracy with its 6-view TTA (flip_shift) on the CIFAR-10 JPEG copy, mean ± std "
            f"over seeds {', '.join(map(str, options.seeds))}; whole process {statistics.mean(walls) / 60:.1f} min "
            f"on average (max {max(walls) / 60:.1f} min)",
            f"{100 * mean:.2f}% ± {100 * spread:.2f}",
            command,
            info,
        )
    ]
    result = {"rows": rows, "runs": runs, "curve": curve, "recipe_args": recipe_args}
    write_json(result, options.out)
    if curve:
        plot_curve(result)
    print(
        f"\ntest accuracy {100 * mean:.2f}% ± {100 * spread:.2f} over {len(runs)} seeds; "
        f"wall {statistics.mean(walls):.0f} s mean, {max(walls):.0f} s max"
    )


if __name__ == "__main__":
    main()
