"""Every denoiser on every noise model, beside classical filters, on the same scientific fields; one table and JSON.

    python benchmarks/denoising_study.py                 # 5 networks x 3 noises + 4 filters, 32x32 fields: CPU minutes
    python benchmarks/denoising_study.py --models ircnn,dncnn_s,unet_small --noises poisson --img_size 64 --steps 600
    python benchmarks/denoising_study.py --quick --out /tmp/denoising.json   # seconds: the test's settings

Data: :class:`datamodules.ScientificFieldsDataModule` (Gaussian random fields, heat-equation snapshots and
microscopy-like blobs in turn), trained with flips and 90-degree rotations. Each noise model (Gaussian of std
``--noise_std``, Poisson at ``--peak`` photons for white, salt and pepper on ``--amount`` of the pixels) noises the
validation and test images once, from the same seed, so every method is scored on the very same noisy images.

- **Networks**: each registered preset trains ``--steps`` AdamW steps of ``--batch_size`` fresh noisy images (a
  cosine schedule from ``--lr``, MSE loss) from the same seed, then is tested.
- **Classical filters** (:class:`zoo.ClassicalDenoiser`: Gaussian, median, total variation, non-local means): each
  one's strength is picked from a small grid by PSNR on the validation images, then tested.

Columns: PSNR pooled over the split, the mean of per-image PSNR, the mean of per-image SSIM (all in pixel units,
outputs clipped to [0, 1]), parameters, and training seconds. The ``noisy input`` row is the baseline. Prints the
table and writes ``benchmarks/results/denoising_study.json`` (every number, the settings, the machine, and one
results row per noise model for docs/results.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from datetime import date
from importlib.metadata import version
from typing import Any

import lightning as L
import torch
from _timing import RESULTS, machine, result_row, write_json

import zoo
from datamodules import ScientificFieldsDataModule

#: The networks by default (``dncnn_s``, 17 layers at full resolution, costs 3 times IRCNN's step: ``--models``).
NETWORKS = "ircnn,unet_denoiser_small,unet_small,unet_residual_small,unet_attention_small"
#: Each filter's strength grid: Gaussian std (pixels), median radius, TV weight, non-local means' h.
GRIDS: dict[str, tuple[float, ...]] = {
    "gaussian": (0.5, 0.75, 1.0, 1.5, 2.0),
    "median": (1.0, 2.0),
    "tv": (0.03, 0.06, 0.12, 0.25, 0.5),
    "nl_means": (0.05, 0.1, 0.2, 0.3, 0.5),
}
METRICS = ("psnr", "psnr_mean", "ssim")
PACKAGES = ("torch", "lightning", "torchmetrics", "scikit-image")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=NETWORKS, help="comma-separated denoising presets")
    parser.add_argument("--noises", default="gaussian,poisson,salt_pepper")
    parser.add_argument("--filters", default=",".join(GRIDS), help="classical filters ('' for none)")
    parser.add_argument("--noise_std", type=float, default=0.15, help="Gaussian noise's std in [0, 1] pixels")
    parser.add_argument("--peak", type=float, default=10.0, help="Poisson noise's photons for white")
    parser.add_argument("--amount", type=float, default=0.1, help="salt and pepper's fraction of pixels")
    parser.add_argument("--img_size", type=int, default=32, help="a multiple of 16 (the U-Nets)")
    parser.add_argument("--steps", type=int, default=300, help="training steps per network")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--val_size", type=int, default=64, help="validation images (the filters' strength)")
    parser.add_argument("--test_size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="2 networks, 2 filters, 2 noises, 2 steps, 32x32 images")
    parser.add_argument("--out", default=str(RESULTS / "denoising_study.json"))
    if parser.parse_known_args(argv)[0].quick:  # the quick sizes, unless given explicitly
        parser.set_defaults(models="ircnn,unet_small", filters="gaussian,median", noises="gaussian,salt_pepper")
        parser.set_defaults(steps=2, img_size=32, val_size=16, test_size=16)
    args = parser.parse_args(argv)
    args.models = [name for name in args.models.split(",") if name]
    args.noises = [name for name in args.noises.split(",") if name]
    args.filters = [name for name in args.filters.split(",") if name]
    return args


def datamodule(args: argparse.Namespace) -> ScientificFieldsDataModule:
    data = ScientificFieldsDataModule(
        img_size=args.img_size,
        train_size=args.steps * args.batch_size,  # every training image is seen once
        val_size=args.val_size,
        test_size=args.test_size,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    data.setup()
    return data


def noise_args(noise: str, args: argparse.Namespace) -> dict[str, Any]:
    """The task's noise arguments, the same for every method (and so the same noisy evaluation images)."""
    return dict(
        noise=noise,
        noise_std=args.noise_std,
        peak=args.peak,
        amount=args.amount,
        noise_seed=args.seed,
        img_size=args.img_size,
    )


def score(model: L.LightningModule, data: ScientificFieldsDataModule, split: str) -> dict[str, float]:
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    run = trainer.validate if split == "val" else trainer.test
    metrics = run(model, datamodule=data, verbose=False)[0]
    return {key.split("/", 1)[1]: float(value) for key, value in metrics.items()}


def train_network(name: str, noise: str, data: ScientificFieldsDataModule, args: argparse.Namespace) -> dict:
    L.seed_everything(args.seed, verbose=False)
    model = zoo.create_model(name, lr=args.lr, weight_decay=0.0, **noise_args(noise, args))
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    seconds = time.perf_counter() - start
    metrics = score(model, data, "test")
    params = sum(p.numel() for p in model.parameters())
    return {"method": name, "kind": "network", "params": params, "train_s": seconds, **metrics}


def tune_filter(method: str, noise: str, data: ScientificFieldsDataModule, args: argparse.Namespace) -> dict:
    """The filter at the strength with the best validation PSNR, tested."""
    scores = {}
    for strength in GRIDS[method]:
        scores[strength] = score(zoo.ClassicalDenoiser(method, strength, **noise_args(noise, args)), data, "val")
    best = max(scores, key=lambda strength: scores[strength]["psnr"])
    metrics = score(zoo.ClassicalDenoiser(method, best, **noise_args(noise, args)), data, "test")
    return {"method": f"{method} filter", "kind": "classical", "strength": best, "params": 0, "train_s": 0.0, **metrics}


def input_row(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The noisy input's scores (the same images for every method, so any one's ``*_input`` values)."""
    first = results[0]
    return {"method": "noisy input", "kind": "input", "params": 0, "train_s": 0.0}, {
        metric: first[f"{metric}_input"] for metric in METRICS
    }


def format_table(by_noise: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    header = f"{'method':<24} {'PSNR':>7} {'PSNR mean':>9} {'SSIM':>6} {'params':>10} {'train s':>8}"
    for noise, rows in by_noise.items():
        lines += [f"noise: {noise}", header, "-" * len(header)]
        for row in rows:
            lines.append(
                f"{row['method']:<24} {row['psnr']:>7.2f} {row['psnr_mean']:>9.2f} {row['ssim']:>6.3f} "
                f"{row['params']:>10,} {row['train_s']:>8.1f}"
            )
        lines.append("")
    return "\n".join(lines)


def noise_label(noise: str, args: argparse.Namespace) -> str:
    return {
        "gaussian": f"Gaussian sigma {args.noise_std}",
        "poisson": f"Poisson, peak {args.peak:g} photons",
        "salt_pepper": f"salt and pepper on {args.amount:.0%} of pixels",
    }[noise]


def result_rows(by_noise: dict[str, list[dict]], args: argparse.Namespace, command: str, info: dict) -> list[dict]:
    """One results row per noise model: the input, the best filter and the best network, by test PSNR."""
    out = []
    for noise, rows in by_noise.items():
        described = []
        for kind in ("input", "classical", "network"):
            ranked = sorted((row for row in rows if row["kind"] == kind), key=lambda row: -row["psnr"])
            if ranked:
                row = ranked[0]
                described.append(f"{row['method']} {row['psnr']:.2f} dB / SSIM {row['ssim']:.3f}")
        what = (
            f"denoising study, {noise_label(noise, args)}, {args.img_size}x{args.img_size} scientific fields, "
            f"networks {args.steps} steps of {args.batch_size}: test PSNR / SSIM of the input, the best filter and "
            "the best network"
        )
        out.append(result_row(what, "; ".join(described), command, info, PACKAGES))
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = " ".join(["python", "benchmarks/denoising_study.py", *(sys.argv[1:] if argv is None else argv)])
    data = datamodule(args)
    start = time.perf_counter()
    by_noise: dict[str, list[dict[str, Any]]] = {}
    for noise in args.noises:
        rows = [tune_filter(method, noise, data, args) for method in args.filters]
        rows += [train_network(name, noise, data, args) for name in args.models]
        meta, values = input_row(rows)
        by_noise[noise] = [{**meta, **values}, *rows]
        print(format_table({noise: by_noise[noise]}), flush=True)
    info = machine()
    report = {
        "command": command,
        "machine": info,
        "versions": {package: version(package) for package in PACKAGES},
        "date": date.today().isoformat(),
        "settings": {key: value for key, value in vars(args).items() if key != "out"},
        "wall_s": time.perf_counter() - start,
        "results": by_noise,
        "table": format_table(by_noise),
        "rows": result_rows(by_noise, args, command, info),
    }
    print(f"{len(args.noises)} noises x {len(args.models) + len(args.filters)} methods in {report['wall_s']:.0f} s")
    write_json(report, args.out)
    return report


if __name__ == "__main__":
    main()
