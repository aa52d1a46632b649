"""Int8 quantization through torchao on MNIST: size, CPU latency and accuracy before and after; one table and a JSON.

OMP_NUM_THREADS=1 python benchmarks/quantization.py                        # train each model 1 epoch, then measure
OMP_NUM_THREADS=1 python benchmarks/quantization.py --mlp_ckpt a.ckpt --cnn_ckpt b.ckpt   # trained checkpoints
OMP_NUM_THREADS=1 python benchmarks/quantization.py --no_compile           # eager latency only (no Inductor)

The MLP (``mlp_base``) gets torchao's dynamic int8 (``Int8DynamicActivationInt8WeightConfig``) and weight-only int8;
the CNN (``cnn_bn``) gets static int8 through the PT2E flow (``X86InductorQuantizer``, calibrated on
``--calib_batches`` training batches). Sizes are ``torch.save(state_dict)`` and the file the model is kept in
(:func:`recipes.tools.quantize.save_quantized`; a ``.pt2`` program for the CNN, float or int8). Latency is the median of
``--iters`` forward passes with one thread, in eager mode and (unless ``--no_compile``) after ``torch.compile``,
which is where int8 kernels run. Accuracy is on the 10,000 MNIST test images, with the share of test predictions
equal to the float model's ("agree").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.export import Dim

import zoo
from datamodules import MNISTDataModule
from recipes.tools.quantize import quantize_linear, quantize_static, save_quantized, serialized_mb

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "quantization.json"
MODELS = {"mlp": "mlp_base", "cnn": "cnn_bn"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=str(DEFAULT_DATA), help="folder holding MNIST/raw/*-ubyte.gz")
    parser.add_argument("--mlp_ckpt", help="a trained MLP checkpoint instead of training one")
    parser.add_argument("--cnn_ckpt", help="a trained CNN checkpoint instead of training one")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs when no checkpoint is given")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--calib_batches", type=int, default=16, help="training batches that calibrate static int8")
    parser.add_argument("--iters", type=int, default=50, help="timed forward passes per latency figure")
    parser.add_argument("--no_compile", action="store_true", help="skip the torch.compile latency columns")
    parser.add_argument("--limit_train_batches", type=int, default=0, help="0: whole epochs (a smoke test: a few)")
    parser.add_argument("--limit_test_batches", type=int, default=0, help="0: the whole test set")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    return parser.parse_args(argv)


def trained_model(kind: str, ckpt: str | None, datamodule: MNISTDataModule, epochs: int, limit: int = 0) -> nn.Module:
    """The checkpoint's model, or the preset trained for ``epochs`` on the datamodule."""
    if ckpt:
        return zoo.load_from_checkpoint(ckpt)
    L.seed_everything(0, verbose=False)
    model = zoo.create_model(MODELS[kind], num_classes=10)
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        limit_train_batches=limit or None,
        default_root_dir=tempfile.mkdtemp(prefix="quant_bench_"),
    )
    trainer.fit(model, datamodule=datamodule)
    return model.eval()


@torch.no_grad()
def predictions(model: Callable[[torch.Tensor], torch.Tensor], loader: Any, limit: int = 0) -> tuple[torch.Tensor, ...]:
    """Predicted and true classes over the loader."""
    preds, targets = [], []
    for index, (x, y) in enumerate(loader):
        if limit and index >= limit:
            break
        preds.append(model(x).argmax(-1))
        targets.append(y)
    return torch.cat(preds), torch.cat(targets)


@torch.no_grad()
def latency_ms(model: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], iters: int) -> float:
    """Median milliseconds of one forward pass (after warm-up)."""
    x = torch.randn(shape)
    for _ in range(5):
        model(x)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def file_mb(model: nn.Module, program: bool) -> float:
    """Size of the file the model is kept in: a ``torch.export`` program (the CNNs, float or static int8) or a state
    dict (the MLPs; :func:`~recipes.tools.quantize.save_quantized` for the torchao ones)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("m.pt2" if program else "m.pt")
        if isinstance(model, torch.fx.GraphModule) or getattr(model, "zoo_quantization", None):
            save_quantized(model, path)
        elif program:
            example = model.example_input_array
            torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: Dim.DYNAMIC},)), path)
        else:
            torch.save(model.state_dict(), path)
        return path.stat().st_size / 1e6


def measure(name: str, method: str, model: nn.Module, reference: torch.Tensor | None, args: Any, loader: Any) -> dict:
    example = model.example_input_array
    shape = tuple((example[0] if isinstance(example, tuple) else example).shape[1:])
    pred, target = predictions(model, loader, args.limit_test_batches)
    row: dict[str, Any] = {
        "model": name,
        "method": method,
        "state_dict_mb": serialized_mb(model),
        "file_mb": file_mb(model, program=name == MODELS["cnn"]),
        "acc": (pred == target).float().mean().item(),
        "agree": 1.0 if reference is None else (pred == reference).float().mean().item(),
        "ms_b1": latency_ms(model, (1, *shape), args.iters),
        "ms_b32": latency_ms(model, (32, *shape), args.iters),
    }
    if not args.no_compile:
        compiled = torch.compile(model)
        row["compiled_ms_b1"] = latency_ms(compiled, (1, *shape), args.iters)
        row["compiled_ms_b32"] = latency_ms(compiled, (32, *shape), args.iters)
    print(f"  {name} {method}: acc {row['acc']:.4f}, {row['state_dict_mb']:.3f} MB", flush=True)
    return row, pred


def format_table(rows: list[dict[str, Any]]) -> str:
    compiled = "compiled_ms_b1" in rows[0]
    header = "| model | method | state dict MB | file MB | acc | agree | ms b1 | ms b32 |" + (
        " compiled b1 | compiled b32 |" * compiled
    )
    lines = [header, "|" + " --- |" * (8 + 2 * compiled)]
    for r in rows:
        cells = [r["model"], r["method"], f"{r['state_dict_mb']:.3f}", f"{r['file_mb']:.3f}"]
        cells += [f"{r['acc']:.4f}", f"{r['agree']:.4f}"]
        cells += [f"{r['ms_b1']:.3f}", f"{r['ms_b32']:.3f}"]
        if compiled:
            cells += [f"{r['compiled_ms_b1']:.3f}", f"{r['compiled_ms_b32']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train (or load), quantize, measure; returns what it writes to ``--out``."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    datamodule = MNISTDataModule(data_dir=args.data_dir, batch_size=args.batch_size, num_workers=0)
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")
    test_loader = datamodule.test_dataloader()
    start = time.perf_counter()
    rows = []

    mlp = trained_model("mlp", args.mlp_ckpt, datamodule, args.epochs, args.limit_train_batches)
    row, reference = measure(MODELS["mlp"], "fp32", mlp, None, args, test_loader)
    rows.append(row)
    for method, weight_only in (("int8 dynamic (torchao quantize_)", False), ("int8 weight-only", True)):
        rows.append(measure(MODELS["mlp"], method, quantize_linear(mlp, weight_only), reference, args, test_loader)[0])

    cnn = trained_model("cnn", args.cnn_ckpt, datamodule, args.epochs, args.limit_train_batches)
    row, reference = measure(MODELS["cnn"], "fp32", cnn, None, args, test_loader)
    rows.append(row)
    calibration = (x for index, (x, _) in enumerate(datamodule.train_dataloader()) if index < args.calib_batches)
    static = quantize_static(cnn, calibration)
    method = "int8 static (PT2E, X86InductorQuantizer)"
    rows.append(measure(MODELS["cnn"], method, static, reference, args, test_loader)[0])

    command = argv if argv is not None else sys.argv[1:]
    report = {
        "command": f"OMP_NUM_THREADS=1 python benchmarks/quantization.py {' '.join(command)}".strip(),
        "torch": torch.__version__,
        "torchao": __import__("torchao").__version__,
        "threads": torch.get_num_threads(),
        "machine": "2-core shared CPU",
        "trained_epochs": None if args.mlp_ckpt and args.cnn_ckpt else args.epochs,
        "test_images": len(reference),
        "wall_s": time.perf_counter() - start,
        "rows": rows,
    }
    table = format_table(rows)
    print(table)
    print(f"in {report['wall_s']:.0f} s; latency: median of {args.iters} passes, 1 thread")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as file:
        json.dump({**report, "table": table}, file, indent=2)
    return report


if __name__ == "__main__":
    main()
