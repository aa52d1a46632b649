"""The results of the recipes, each measured by the command beside it: the rows of the results page.

Each run is a recipe's ``fit`` (with ``test_after_fit``) in its own process; a row records what was measured, the
value, the command, the wall time, the machine, the versions and the date, in ``benchmarks/results/recipes.json``
(rows of runs not repeated are kept). ``python docs/generate.py`` turns the rows into the table of
``docs/results.md``.

    python benchmarks/recipe_results.py --list               # the runs it knows
    python benchmarks/recipe_results.py digits_cnn parity_gru  # measure these (rows of others are kept)
    python benchmarks/recipe_results.py --all                 # every run (about an hour on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import date
from importlib.metadata import version
from pathlib import Path

from _timing import run_child

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
OUT = REPO / "benchmarks" / "results" / "recipes.json"

#: name -> (what is measured, the metric, how it is shown, the recipe's arguments after ``fit``).
RUNS: dict[str, tuple[str, str, str, list[str]]] = {
    "digits_cnn": ("digits_cnn (the demo), test accuracy of the best checkpoint", "test/acc", "percent", []),
    "function_mlp": ("function_mlp, test MAE on the 2-D test function (target < 0.05)", "test/mae", "plain", []),
    "parity_gru": ("parity_gru, test accuracy on 2,000 bit strings", "test/acc", "percent", []),
    "extrema_bilstm": ("extrema_bilstm (bidirectional LSTM tagger), test token accuracy", "test/acc", "percent", []),
    "extrema_lstm": (
        "extrema_bilstm with one direction (a tag needs the next token)",
        "test/acc",
        "percent",
        ["--model.init_args.bidirectional=false"],
    ),
    "digits_transformer": ("digits_transformer, test accuracy", "test/acc", "percent", []),
    "forecast_sunspots": ("forecast_sunspots (N-BEATS, Gaussian), test MAE in sunspots", "test/mae", "plain", []),
    "mnist_cnn": (
        "mnist_cnn (2 epochs of one-cycle), test accuracy",
        "test/acc",
        "percent",
        [f"--data.data_dir={SHARED / 'mnist'}"],
    ),
    "mnist_cnn_1ep": (
        "mnist_cnn for 1 epoch (the baseline of the mixing and TTA rows below), test accuracy",
        "test/acc",
        "percent",
        [f"--data.data_dir={SHARED / 'mnist'}", "--trainer.max_epochs=1"],
    ),
    "mnist_cnn_mix": (
        "mnist_cnn for 1 epoch with mixup (alpha 0.2) or CutMix (alpha 1.0) on every batch, test accuracy",
        "test/acc",
        "percent",
        [
            f"--data.data_dir={SHARED / 'mnist'}",
            "--trainer.max_epochs=1",
            "--model.init_args.mixup_alpha=0.2",
            "--model.init_args.cutmix_alpha=1.0",
        ],
    ),
    "mnist_cnn_tta": (
        "mnist_cnn for 1 epoch, tested with tta flip_crop (10 flipped and shifted views; the training of "
        "mnist_cnn_1ep, same seed), test accuracy",
        "test/acc",
        "percent",
        [f"--data.data_dir={SHARED / 'mnist'}", "--trainer.max_epochs=1", "--model.init_args.tta=flip_crop"],
    ),
    "mnist_seqcnn": (
        "mnist_seqcnn (1-d CNN on sequential MNIST), test accuracy after 1 epoch",
        "test/acc",
        "percent",
        [f"--data.data_dir={SHARED / 'mnist'}", "--trainer.max_epochs=1"],
    ),
    "mnist_denoise": (
        "mnist_denoise (IRCNN, sigma 0.3), test PSNR after 1 epoch (noisy input: 13.3 dB)",
        "test/psnr",
        "db",
        [f"--data.data_dir={SHARED / 'mnist'}", "--trainer.max_epochs=1"],
    ),
    "smnist_lstm": (
        "smnist_lstm (LSTM 2x128 on the rows of MNIST), test accuracy",
        "test/acc",
        "percent",
        [f"--data.data_dir={SHARED / 'mnist'}"],
    ),
    "seq2seq_reverse": ("seq2seq_reverse (Transformer), test exact match", "test/exact_match", "percent", []),
    "mnist_denoise_unet": (
        "mnist_denoise with the U-Net of unet_denoiser_small, test PSNR after 1 epoch",
        "test/psnr",
        "db",
        [f"--data.data_dir={SHARED / 'mnist'}", "--trainer.max_epochs=1", "--model=zoo.UNetDenoiser"],
    ),
    "seq2seq_reverse_lstm": (
        "seq2seq_reverse_lstm (LSTM with attention), test exact match",
        "test/exact_match",
        "percent",
        [],
    ),
    "shakespeare_char_lstm": (
        "shakespeare_char_lstm (2 layers of 256), test loss in bits per character after 4,000 steps",
        "test/bpc",
        "plain",
        [],
    ),
    "shakespeare_char_gpt": (
        "shakespeare_char_gpt (4 layers of 128), test loss in bits per character after 4,000 steps",
        "test/bpc",
        "plain",
        [],
    ),
    "cifar10_cnn": (
        "cifar10_cnn, test accuracy after 2 epochs on the CIFAR-10 JPEG copy",
        "test/acc",
        "percent",
        [f"--data.data_dir={SHARED}", "--trainer.max_epochs=2"],
    ),
    "mnist_autoencoder": (
        "mnist_autoencoder (8x4x4 code), test PSNR of the reconstructions after 3 epochs",
        "test/psnr",
        "db",
        [f"--data.data_dir={SHARED / 'mnist'}"],
    ),
    "mnist_vae": (
        "mnist_vae (16-d latent), test ELBO in nats per image after 3 epochs",
        "test/elbo",
        "plain",
        [f"--data.data_dir={SHARED / 'mnist'}"],
    ),
    "shapes_pointnet": ("shapes_pointnet (8 generated shapes), test accuracy", "test/acc", "percent", []),
    "volumes_cnn3d": ("volumes_cnn3d (6 generated solids in 16^3 grids), test accuracy", "test/acc", "percent", []),
    "sincos_lstm": ("sincos_lstm (noisy sine or cosine), test accuracy (target > 95%)", "test/acc", "percent", []),
    "sequence_denoise_bilstm": (
        "sequence_denoise_bilstm, test MSE of the denoised series",
        "test/mse",
        "plain",
        [],
    ),
    "cifar10_vgg": (
        "cifar10_vgg (VGG-style with BatchNorm), test accuracy after 1 epoch with the fast path (bf16, compile)",
        "test/acc",
        "percent",
        [f"--data.data_dir={SHARED}", "--config=recipes/fast.yaml", "--trainer.max_epochs=1"],
    ),
    "caption_lstm": (
        "caption_lstm (conv grid, 2-layer LSTM with attention) on the embedded digit scenes, test BLEU-4",
        "test/bleu4",
        "plain",
        [],
    ),
    "caption_transformer": (
        "caption_transformer (conv grid, Transformer decoder) on the embedded digit scenes, test BLEU-4",
        "test/bleu4",
        "plain",
        [],
    ),
    "caption_transformer_blind": (
        "caption_transformer trained and tested on blank images (image-blind baseline), test BLEU-4",
        "test/bleu4",
        "plain",
        ["--model.init_args.image_blind=true"],
    ),
}
#: name -> more metrics shown after the value: (metric, label, how it is shown).
ALSO = {
    name: [("test/exact_match", "exact match", "percent")]
    for name in ("caption_lstm", "caption_transformer", "caption_transformer_blind")
}
#: name -> a metric shown beside the value as the baseline it beats.
BASELINE = {"sequence_denoise_bilstm": ("test/mse_input", "the noisy input's")}
RECIPE = {
    "extrema_lstm": "extrema_bilstm",
    "mnist_cnn_1ep": "mnist_cnn",
    "mnist_cnn_mix": "mnist_cnn",
    "mnist_cnn_tta": "mnist_cnn",
    "mnist_denoise_unet": "mnist_denoise",
    "caption_transformer_blind": "caption_transformer",
}
_CHILD = """
import json, sys
from importlib import import_module
cli = import_module("recipes." + sys.argv[1]).main(["fit", *sys.argv[2:]])
print("METRICS " + json.dumps({k: float(v) for k, v in cli.trainer.callback_metrics.items()}))
"""


def machine() -> str:
    """The CPU model and core count (from /proc/cpuinfo where there is one)."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} cores), CPU"


def _shown(value: float, shown: str) -> str:
    return {"percent": f"{100 * value:.2f}%", "db": f"{value:.2f} dB"}.get(shown, f"{value:.4g}")


def run(name: str, logs: Path) -> dict:
    """One row: the recipe's fit and test in a child process."""
    what, metric, shown, args = RUNS[name]
    recipe = RECIPE.get(name, name)
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    child_args = [recipe, *args, *quiet, f"--trainer.logger.init_args.save_dir={logs}"]
    try:
        metrics, wall = run_child(_CHILD, child_args, "METRICS", cwd=REPO)
    except RuntimeError as error:
        raise RuntimeError(f"{name}: {error}") from None
    value = metrics[metric]
    text = _shown(value, shown)
    for extra, label, extra_shown in ALSO.get(name, []):
        text += f", {label} {_shown(metrics[extra], extra_shown)}"
    if name in BASELINE:
        baseline, label = BASELINE[name]
        what = f"{what} ({label}: {metrics[baseline]:.4g})"
    shown_args = " ".join(arg.replace(str(SHARED), "../shared/data") for arg in args)
    return {
        "what": f"{what}; {wall / 60:.1f} min",
        "value": text,
        "command": f"python -m recipes.{recipe} fit {shown_args}".strip(),
        "machine": machine(),
        "versions": {package: version(package) for package in ("torch", "lightning", "torchmetrics")},
        "date": date.today().isoformat(),
        "run": name,
        "metric": metric,
        "raw": value,
        "wall_s": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="runs to measure")
    parser.add_argument("--all", action="store_true", help="measure every run")
    parser.add_argument("--list", action="store_true", help="list the runs and exit")
    parser.add_argument("--out", type=Path, default=OUT)
    options = parser.parse_args(argv)
    if options.list:
        print("\n".join(f"{name}: {spec[0]}" for name, spec in RUNS.items()))
        return 0
    names = list(RUNS) if options.all else options.runs
    unknown = sorted(set(names) - set(RUNS))
    if unknown or not names:
        parser.error(f"give runs among {', '.join(RUNS)} (or --all); unknown: {unknown}")
    rows = json.loads(options.out.read_text())["rows"] if options.out.is_file() else []
    logs = REPO / "benchmarks" / "results" / "logs"
    for name in names:
        row = run(name, logs)
        rows = [old for old in rows if old.get("run") != name] + [row]
        rows.sort(key=lambda item: list(RUNS).index(item["run"]) if item.get("run") in RUNS else len(RUNS))
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")  # after each run: a crash keeps the rest
        print(f"{name}: {row['value']} ({row['wall_s']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
