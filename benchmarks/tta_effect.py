"""The measured effect of test-time augmentation: one trained image classifier's checkpoint tested on its test split
with ``tta`` none, flip and flip_crop (the same weights, only the views change).

    python benchmarks/recipe_results.py cifar10_cnn     # trains the checkpoint (12 minutes on 2 CPU cores)
    python benchmarks/tta_effect.py --data_dir ../shared/data \\
        --ckpt benchmarks/results/logs/cifar10_cnn/version_0/checkpoints/epoch=001-val_acc=0.7032.ckpt

The datamodule is the one the run used (its ``config.yaml`` beside ``checkpoints/``), with ``--data_dir``. Prints a
table and writes ``benchmarks/results/tta_effect.json`` (rows of the results page).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import lightning as L
import yaml
from _timing import machine, result_row

import zoo
from zoo.checkpoint import import_class

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "tta_effect.json"
MODES = ("none", "flip", "flip_crop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a checkpoint inside a run folder (<run>/checkpoints/*.ckpt)")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--trained_by", default="python -m recipes.cifar10_cnn fit --trainer.max_epochs=2")
    parser.add_argument("--out", default=str(OUT))
    options = parser.parse_args()
    ckpt = Path(options.ckpt)
    config_file = ckpt.parent.parent / "config.yaml"
    if not ckpt.is_file() or not config_file.is_file():
        sys.exit(f"need {ckpt} and the run's {config_file}: train it first (see the docstring)")
    data = yaml.safe_load(config_file.read_text())["data"]
    data_args = {**(data.get("init_args") or {}), "data_dir": options.data_dir}
    datamodule = import_class(data["class_path"], trusted=("datamodules",))(**data_args)
    model = zoo.load_from_checkpoint(ckpt)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    info, rows, results = machine(), [], {}
    for mode in MODES:
        model.tta = mode
        started = time.perf_counter()
        (metrics,) = trainer.test(model, datamodule=datamodule, verbose=False)
        seconds = time.perf_counter() - started
        results[mode] = {"test/acc": metrics["test/acc"], "test/loss": metrics["test/loss"], "seconds": seconds}
        print(
            f"tta={mode:10s} test/acc {metrics['test/acc']:.4f}  test/loss {metrics['test/loss']:.4f}  {seconds:.0f} s"
        )
        rows.append(
            result_row(
                f"test-time augmentation `{mode}` on the {type(datamodule).__name__} test split, one checkpoint of "
                f"`{options.trained_by}` ({seconds:.0f} s to test)",
                f"{100 * metrics['test/acc']:.2f}%",
                f"python benchmarks/tta_effect.py --ckpt {ckpt.name} (tta {mode})",
                info,
            )
        )
    Path(options.out).write_text(json.dumps({"rows": rows, "checkpoint": str(ckpt), "results": results}, indent=2))


if __name__ == "__main__":
    main()
