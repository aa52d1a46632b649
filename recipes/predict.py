"""Predict image files and folders, or continue a text, with a checkpoint or an ONNX file.

zoo predict --ckpt_path logs/digits_cnn/version_0/checkpoints/last.ckpt --inputs digits/     # a folder, recursively
zoo predict --onnx digits_cnn.onnx --inputs a.png b.png --top_k 3 --output preds.json
zoo predict --ckpt_path logs/shakespeare_char_gpt/version_0/checkpoints/last.ckpt --text "ROMEO:" --max_new_tokens 200

Images get the evaluation preprocessing of the model's training data (resize to its size, grayscale or RGB,
normalization), read from the checkpoint or the ONNX file's metadata. Without ``--inputs``/``--text``,
``zoo predict`` is LightningCLI's ``predict`` over a datamodule.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from zoo.inference import InputError, Predictor, collect_images


def build_parser() -> argparse.ArgumentParser:
    """The arguments of ``zoo predict`` with ``--inputs`` or ``--text``."""
    parser = argparse.ArgumentParser(
        prog="zoo predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--ckpt_path", help="a checkpoint of a zoo model")
    model.add_argument("--onnx", help="an ONNX file written by `zoo export`")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--inputs", nargs="+", help="image files and folders (searched recursively)")
    data.add_argument("--text", help="the text a language model continues (or a seq2seq model answers)")
    parser.add_argument("--top_k", type=int, default=5, help="classes listed per image")
    parser.add_argument("--batch_size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--output", help="also write the predictions to this JSON file")
    parser.add_argument("--max_new_tokens", type=int, default=200, help="text: characters to generate")
    parser.add_argument("--temperature", type=float, default=0.8, help="text: 0 always picks the most likely")
    parser.add_argument("--sample_top_k", type=int, default=None, help="text: sample among the k most likely")
    parser.add_argument("--seed", type=int, default=0, help="text: seed of the sampling")
    return parser


def print_table(results: list[dict[str, Any]]) -> None:
    """The predictions as a rich table: input, top-1 class and probability, the top-k."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Predictions ({len(results)})")
    if results and "continuation" in results[0]:
        table.add_column("input")
        table.add_column("output")
        for result in results:
            table.add_row(result["input"], result["continuation"])
    else:
        for column in ("file", "top-1", "probability", "top-k"):
            table.add_column(column, justify="right" if column == "probability" else "left")
        for result in results:
            if "top_k" not in result:
                table.add_row(result["input"], "-", "-", json.dumps(result["outputs"])[:80])
                continue
            top = ", ".join(f"{_label(entry)} {entry['probability']:.3f}" for entry in result["top_k"])
            table.add_row(result["input"], _label(result), f"{result['probability']:.4f}", top)
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def _label(entry: dict[str, Any]) -> str:
    return entry["class"] if entry.get("class") is not None else str(entry["index"])


def main(args: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Parse ``args`` (``None``: ``sys.argv``), print the predictions as a table and return them.

    Raises:
        SystemExit: with a message naming the file, shape or characters at fault, for input that cannot be read.
    """
    options = build_parser().parse_args(args)
    if options.top_k < 1 or options.batch_size < 1:
        raise SystemExit("error: --top_k and --batch_size must be >= 1")
    try:
        predictor = Predictor.from_onnx(options.onnx) if options.onnx else Predictor.from_checkpoint(options.ckpt_path)
        if options.text is not None:
            text = options.text.encode().decode("unicode_escape") if "\\" in options.text else options.text
            results = [
                predictor.generate(
                    text, options.max_new_tokens, options.temperature, options.sample_top_k, options.seed
                )
            ]
        else:
            files = collect_images(options.inputs)
            results = predictor.predict_images(files, options.top_k, batch_size=options.batch_size)
    except (InputError, FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    print_table(results)
    if options.output:
        with open(options.output, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
