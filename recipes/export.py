"""Export a checkpoint or a preset to ONNX or a ``torch.export`` program, checked against eager PyTorch.

zoo export --ckpt_path logs/digits_cnn/version_0/checkpoints/last.ckpt --format onnx --output digits_cnn.onnx
zoo export --ckpt_path last.ckpt --format pt2 --output digits_cnn.pt2
zoo export --model cnn_digits --output cnn_digits.onnx          # a preset with fresh weights (format from the suffix)

The written file runs on the model's example input and on random inputs of another batch size; the largest
absolute difference to the eager model is printed, and above ``--atol`` + ``--rtol`` x the largest absolute output,
nothing is written and the command fails. An ONNX file from a checkpoint also carries the training data's
preprocessing (``zoo.preprocess``), read by ``zoo predict --onnx``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

import zoo
from zoo.export import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    INSTALL_HINT,
    check_parity,
    export_onnx,
    export_program,
    failure_reason,
    random_inputs,
)

FORMATS = ("onnx", "pt2")


def build_parser() -> argparse.ArgumentParser:
    """The arguments of ``zoo export``."""
    parser = argparse.ArgumentParser(
        prog="zoo export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt_path", help="a checkpoint of a zoo model")
    source.add_argument("--model", help="a registered preset (`zoo list`), exported with fresh weights")
    parser.add_argument("--format", choices=FORMATS, help="default: from the --output suffix, else onnx")
    parser.add_argument("--output", help="the file to write (default: <model name>.<format>)")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="absolute tolerance on the max abs diff")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help="relative part, times the max |output|")
    parser.add_argument("--static_batch", action="store_true", help="a fixed batch size (the example's)")
    return parser


def main(args: Sequence[str] | None = None) -> Path:
    """``zoo export``: write the file, print its parity and size, return its path.

    Raises:
        SystemExit: with a message naming the file, preset or package at fault.
    """
    parser = build_parser()
    opts = parser.parse_args(sys.argv[1:] if args is None else list(args))
    if not (opts.atol > 0 and opts.rtol >= 0):
        parser.error(f"--atol must be > 0 and --rtol >= 0, got {opts.atol} and {opts.rtol}")
    fmt = opts.format or (Path(opts.output).suffix.lstrip(".") if opts.output else "")
    fmt = fmt if fmt in FORMATS else "onnx"
    suffix = Path(opts.output).suffix.lstrip(".") if opts.output else fmt
    if suffix in FORMATS and suffix != fmt:
        parser.error(f"--output {opts.output} ends in .{suffix}, but --format is {fmt}")
    try:
        if opts.ckpt_path:
            model = zoo.load_from_checkpoint(opts.ckpt_path)
            name = Path(opts.ckpt_path).stem
        else:
            model = zoo.create_model(opts.model).eval()
            name = opts.model
        output = Path(opts.output or f"{name}.{fmt}")
        extra = _preprocess_metadata(opts.ckpt_path, model) if opts.ckpt_path else {}
        export = export_onnx if fmt == "onnx" else export_program
        path = export(
            model, output, dynamic_batch=not opts.static_batch, atol=opts.atol, rtol=opts.rtol, extra_metadata=extra
        )
    except ImportError as error:
        hint = "" if INSTALL_HINT in str(error) else f"; {INSTALL_HINT}"
        raise SystemExit(f"error: {error}{hint}") from None
    except (FileNotFoundError, ValueError, TypeError) as error:  # UnknownModelError and ParityError are ValueErrors
        raise SystemExit(f"error: {error}") from None
    except Exception as error:  # exporter failures come in many types: name the model and the reason
        raise SystemExit(f"error: {name} does not export to {fmt} ({failure_reason(error)})") from None
    example_batch = model.example_input_array
    example_batch = (example_batch[0] if isinstance(example_batch, (tuple, list)) else example_batch).shape[0]
    batch_size = example_batch if opts.static_batch else example_batch + 3  # another batch size than the export's
    diff = check_parity(model, path, random_inputs(model, batch_size=batch_size, seed=1))
    size = os.path.getsize(path) + sum(os.path.getsize(p) for p in _external_data(path))
    print(
        f"wrote {path} ({fmt}, {size / 1e6:.3f} MB); max abs diff to eager {diff:.2e} on a random batch of "
        f"{batch_size} (tolerance {opts.atol:g} + {opts.rtol:g} x max |output|)"
    )
    return path


def _preprocess_metadata(ckpt_path: str, model: torch.nn.Module) -> dict[str, str]:
    """``zoo.preprocess``: the training data's evaluation preprocessing, which ``zoo predict --onnx`` reads."""
    try:
        from zoo.inference import checkpoint_preprocessing
    except ImportError:  # the predictor is optional (PIL)
        return {}
    return {"zoo.preprocess": json.dumps(checkpoint_preprocessing(ckpt_path, model).to_dict())}


def _external_data(path: Path) -> list[Path]:
    """ONNX external-data files written beside ``path`` (large models)."""
    data = path.with_name(path.name + ".data")
    return [data] if data.exists() else []


if __name__ == "__main__":
    main()
