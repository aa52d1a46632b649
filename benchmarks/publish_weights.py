"""Train presets with their recipes and publish the weights in ``zoo/weights/`` (see :mod:`zoo.weights`).

    python benchmarks/publish_weights.py --list              # the presets it knows, with their recipes
    python benchmarks/publish_weights.py cnn_digits mlp_small

Each run is the recipe's ``fit`` (with ``test_after_fit``) in its own process. The best checkpoint's weights must load
strictly into ``zoo.create_model(preset, **data sizes)``; they are written as ``<preset>.pt`` (a ``state_dict``,
atomically) with a manifest entry: the command, the data, the test metric and its value, the parameter count, the
file's SHA-256, the data's preprocessing, the date and the versions. ``tests/test_weights.py`` re-evaluates every
published set on its test split.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import date
from importlib.metadata import version
from pathlib import Path

import torch
from _timing import run_child

import zoo
from zoo.checkpoint import data_preprocessing, read_checkpoint, to_primitive
from zoo.weights import MANIFEST, PACKAGE_WEIGHTS, Weights, file_sha256, read_manifest

REPO = Path(__file__).resolve().parents[1]
TEXT_DATA = "Tiny Shakespeare characters: the last 10% of the text (the recipe's validation and test text)"
#: preset -> (recipe, its arguments after ``fit`` with ``{data}`` for ../shared/data, the data, the test metric)
RUNS: dict[str, tuple[str, list[str], str, str]] = {
    "cnn_digits": ("digits_cnn", [], "scikit-learn's 8x8 digits (embedded), its 20% test split", "test/acc"),
    "mlp_small": ("mnist_mlp", ["--data.data_dir={data}/mnist"], "MNIST (IDX files), 10,000 test images", "test/acc"),
    "cnn_simple_bn": (
        "mnist_cnn",
        ["--data.data_dir={data}/mnist"],
        "MNIST (IDX files), 10,000 test images",
        "test/acc",
    ),
    "seqcnn_mnist": (
        "mnist_seqcnn",
        ["--data.data_dir={data}/mnist", "--trainer.max_epochs=1"],
        "MNIST rows as sequences, 10,000 test images",
        "test/acc",
    ),
    "lstm_smnist": (
        "smnist_lstm",
        ["--data.data_dir={data}/mnist"],
        "MNIST rows as sequences, 10,000 test images",
        "test/acc",
    ),
    "nbeats_forecast": ("forecast_sunspots", [], "statsmodels' yearly sunspots, the last windows for test", "test/mae"),
    "lstm_shakespeare_char": ("shakespeare_char_lstm", [], TEXT_DATA, "test/loss"),
    "gpt_shakespeare_char": ("shakespeare_char_gpt", [], TEXT_DATA, "test/loss"),
    "whitened_vgg_cifar": (
        "cifar10_speedrun",
        ["--data.data_dir={data}"],
        "CIFAR-10 as JPEG (the project's copy), 10,000 test images",
        "test/acc",
    ),
}
#: The recipe run: its best checkpoint (its last, for a recipe that validates nothing), the model's hyperparameters,
#: the test metrics.
_CHILD = """
import json, sys
from importlib import import_module
cli = import_module("recipes." + sys.argv[1]).main(["fit", *sys.argv[2:]])
best = next((callback.best_model_path for callback in cli.trainer.checkpoint_callbacks if callback.best_model_path), "")
from zoo.checkpoint import to_primitive
hparams = to_primitive({k: v for k, v in cli.model.hparams.items() if not k.startswith("_")}, "hparams")
metrics = {key: float(value) for key, value in cli.trainer.callback_metrics.items() if key.startswith("test/")}
print("RESULT " + json.dumps({"best": best, "hparams": hparams, "metrics": metrics}))
"""


def _write_atomically(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    partial = path.with_suffix(".pt.partial")
    torch.save(state_dict, partial)
    os.replace(partial, path)


def publish(preset: str, data_root: Path, folder: Path) -> Weights:
    """Train ``preset`` with its recipe and write its weights and manifest entry into ``folder``."""
    recipe, args, data, metric = RUNS[preset]
    args = [arg.format(data=data_root) for arg in args]
    with tempfile.TemporaryDirectory() as work:
        quiet = ["--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={work}"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        found, _ = run_child(_CHILD, [recipe, *args, *quiet], "RESULT", cwd=work, env=env)
        checkpoint = read_checkpoint(found["best"])
    state_dict = checkpoint["state_dict"]
    # What the recipe built differently from the preset: the sizes from the data, a recipe's own choices (a
    # distribution head, ...), its optimizer settings; create_model(pretrained=True) builds it so.
    defaults = to_primitive(dict(zoo.create_model(preset).hparams), "hparams")
    arguments = {key: value for key, value in found["hparams"].items() if defaults.get(key, value) != value}
    model = zoo.create_model(preset, **arguments)
    model.load_state_dict(state_dict)  # strict: the recipe trained this preset, with these arguments
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{preset}.pt"
    _write_atomically(path, model.state_dict())
    shown = " ".join(arg.replace(str(data_root), "../shared/data") for arg in args)
    weights = Weights(
        preset=preset,
        file=path.name,
        sha256=file_sha256(path),
        metric=metric,
        value=found["metrics"][metric],
        data=data,
        command=f"python -m recipes.{recipe} fit {shown}".strip(),
        num_params=sum(p.numel() for p in model.parameters()),
        date=date.today().isoformat(),
        versions={package: version(package) for package in ("torch", "lightning")},
        arguments=arguments,
        preprocessing=data_preprocessing(checkpoint) or {},
        recipe=recipe,
    )
    entries = {**read_manifest(folder), preset: weights}
    manifest = [entry.to_dict() for _, entry in sorted(entries.items())]
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("presets", nargs="*")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--data_root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--folder", default=str(PACKAGE_WEIGHTS))
    options = parser.parse_args()
    if options.list or not options.presets:
        for preset, (recipe, args, data, metric) in RUNS.items():
            print(f"{preset:16s} python -m recipes.{recipe} fit {' '.join(args)}  ({metric} on {data})")
        return
    unknown = sorted(set(options.presets) - set(RUNS))
    if unknown:
        sys.exit(f"no recipe known for {unknown}; --list shows the presets")
    for preset in options.presets:
        weights = publish(preset, Path(options.data_root), Path(options.folder))
        size = (Path(options.folder) / weights.file).stat().st_size / 1e6
        print(f"{preset}: {weights.metric} = {weights.value:.4f}, {weights.num_params:,} parameters, {size:.2f} MB")


if __name__ == "__main__":
    main()
