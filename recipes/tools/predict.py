"""``zoo predict``: answers of a checkpoint or an ONNX file for image files, tensors or text.

zoo predict --ckpt_path logs/digits_cnn/version_0/checkpoints/last.ckpt --inputs digits/     # a folder, recursively
zoo predict --onnx digits_cnn.onnx --inputs a.png b.png --top_k 3 --output preds.json
zoo predict --ckpt_path logs/forecast_sunspots/version_0/checkpoints/last.ckpt --inputs windows.npy
zoo predict --ckpt_path logs/mnist_denoise/version_0/checkpoints/last.ckpt --inputs noisy/ --output_dir clean/
zoo predict --ckpt_path logs/shakespeare_char_gpt/version_0/checkpoints/last.ckpt --text "ROMEO:" --max_new_tokens 200
zoo predict --pretrained cnn_digits --inputs digits/      # a preset's published weights (zoo.list_weights())

What a model reads and answers comes from its task: image classifiers top-k classes (named when the data named
them), taggers a tag per step, forecasters forecasts with intervals in original units, denoisers images, regressors
targets in original units, language models a continuation, seq2seq models an answer. ``--tta flip`` (or
``flip_shift``, ``flip_crop``) makes an image classifier's checkpoint average its class probabilities over mirrored
(and shifted) copies of each image; without it, the checkpoint's own ``tta`` holds. Images get the evaluation
preprocessing of the training data (size, channels, normalization), tensors (``.npy`` or ``.json`` files, a batch or
one sample) are in the data's own units; both read from the checkpoint or the ONNX file's metadata. Without
``--inputs``/``--text``, ``zoo predict`` is LightningCLI's ``predict`` over a datamodule.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recipes.tools.command import (
    check_output_file,
    check_output_folder,
    exactly_one,
    named_errors,
    parse,
    tool_parser,
)
from recipes.tools.predictor import InputError, Predictor, collect_images

#: File endings read as tensors rather than images.
TENSOR_SUFFIXES = (".npy", ".json")


def read_tensor(path: str | os.PathLike[str]) -> torch.Tensor:
    """A tensor from a ``.npy`` file (no pickled objects) or a ``.json`` nested list.

    Raises:
        InputError: naming the file when it holds no rectangular array of numbers.
    """
    try:
        if str(path).endswith(".npy"):
            array = np.load(path, allow_pickle=False)
        else:
            with open(path, encoding="utf-8") as handle:
                array = np.asarray(json.load(handle))
        if array.dtype.kind not in "biuf":
            raise ValueError(f"dtype {array.dtype}")
    except (OSError, ValueError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a rectangular array of numbers ({error})") from error
    return torch.from_numpy(np.ascontiguousarray(array))


def _tensor_files(paths: Sequence[str]) -> list[str]:
    return [path for path in paths if str(path).endswith(TENSOR_SUFFIXES) and os.path.isfile(path)]


def predict_files(predictor: Predictor, paths: Sequence[str], top_k: int, batch_size: int) -> list[dict[str, Any]]:
    """Answers for image files and folders, or for ``.npy``/``.json`` tensor files (one answer per sample)."""
    tensors = _tensor_files(paths)
    if not tensors:
        return predictor.predict_images(collect_images(paths), top_k, batch_size=batch_size)
    if len(tensors) != len(paths):
        raise InputError("give either image files and folders or tensor files (.npy, .json), not both")
    results = []
    for path in tensors:
        x = predictor.check_tensor(read_tensor(path))
        names = [path] if len(x) == 1 else [f"{path}[{index}]" for index in range(len(x))]
        results += predictor.predict_tensor(x, top_k, names)
    return results


def image_file_name(index: int, name: str) -> str:
    """The PNG file name of the ``index``-th answered image, whose input was ``name``."""
    return f"{index:04d}_{Path(str(name)).stem}.png"


def save_images(results: list[dict[str, Any]], folder: str, overwrite: bool = False) -> None:
    """Write each answer's ``image`` (uint8 ``(H, W, C)``) as a PNG into ``folder``; the answer keeps its path.
    Existing files of those names are refused (before any is written) unless ``overwrite``."""
    from PIL import Image

    names = {
        index: image_file_name(index, result["input"]) for index, result in enumerate(results) if "image" in result
    }
    check_output_folder(folder, names.values(), overwrite, "--output_dir")
    for index, name in names.items():
        os.makedirs(folder, exist_ok=True)
        pixels = np.asarray(results[index].pop("image"), dtype=np.uint8)
        path = os.path.join(folder, name)
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)
        results[index]["image_file"] = path


def print_table(results: list[dict[str, Any]]) -> None:
    """The answers as a rich table: the input, and the top-1 class and the top-k, or the answer itself."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Predictions ({len(results)})")
    table.add_column("input")
    table.add_column("answer")
    for result in results:
        if "top_k" in result:
            top = ", ".join(f"{_label(entry)} {entry['probability']:.3f}" for entry in result["top_k"])
            answer = f"{_label(result)} ({result['probability']:.4f}); top-k: {top}"
        elif "output" in result:
            answer = str(result["output"])
        else:
            answer = json.dumps({key: value for key, value in result.items() if key != "input"})[:120]
        table.add_row(str(result["input"]), answer)
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def _label(entry: dict[str, Any]) -> str:
    return entry["class"] if entry.get("class") is not None else str(entry["index"])


def main(args: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Parse ``args`` (``None``: ``sys.argv``), print the answers as a table and return them.

    Raises:
        SystemExit: with a message naming the file, shape or characters at fault, for input that cannot be read.
    """
    parser = tool_parser("predict", __doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=str | None, default=None, help="a checkpoint of a zoo model")
    parser.add_argument("--onnx", type=str | None, default=None, help="an ONNX file written by `zoo export`")
    parser.add_argument("--pretrained", type=str | None, default=None, help="a preset with published weights")
    parser.add_argument("--inputs", nargs="+", type=str, default=None, help="image files or folders, or tensors")
    parser.add_argument("--text", type=str | None, default=None, help="the text a language model continues")
    parser.add_argument("--top_k", type=int, default=5, help="classes listed per answer")
    parser.add_argument(
        "--tta",
        type=str | None,
        default=None,
        help="image classifiers: none, flip, flip_shift or flip_crop (test-time views)",
    )
    parser.add_argument("--batch_size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--output", type=str | None, default=None, help="also write the answers to this JSON file")
    parser.add_argument("--output_dir", type=str, default="predictions", help="where answered images go (PNG)")
    parser.add_argument("--overwrite", type=bool, default=False, help="replace --output and PNGs that exist")
    parser.add_argument("--max_new_tokens", type=int, default=200, help="text: characters to generate")
    parser.add_argument("--temperature", type=float, default=0.8, help="text: 0 always picks the most likely")
    parser.add_argument("--sample_top_k", type=int | None, default=None, help="text: sample among the k most likely")
    parser.add_argument("--seed", type=int, default=0, help="text: seed of the sampling")
    options = parse(parser, args)
    source = exactly_one(parser, options, "ckpt_path", "onnx", "pretrained")
    exactly_one(parser, options, "inputs", "text")
    if options.top_k < 1 or options.batch_size < 1:
        parser.error("--top_k and --batch_size must be >= 1")
    if options.tta is not None and source == "onnx":
        parser.error("--tta applies to checkpoints: an ONNX file runs the views it was exported with")
    check_output_file(options.output, options.overwrite, (".json",))  # before the work, not after it
    with named_errors():
        if source == "onnx":
            predictor = Predictor.from_onnx(options.onnx)
        elif source == "pretrained":
            predictor = Predictor.from_pretrained(options.pretrained, tta=options.tta)
        else:
            predictor = Predictor.from_checkpoint(options.ckpt_path, tta=options.tta)
        if predictor.task.answers_images and options.inputs and not _tensor_files(options.inputs):
            names = [image_file_name(i, name) for i, name in enumerate(collect_images(options.inputs))]
            check_output_folder(options.output_dir, names, options.overwrite, "--output_dir")
        if options.text is not None:
            text = options.text.encode().decode("unicode_escape") if "\\" in options.text else options.text
            sampling = (options.max_new_tokens, options.temperature, options.sample_top_k, options.seed)
            results = [predictor.predict_text(text, *sampling)]
        else:
            results = predict_files(predictor, options.inputs, options.top_k, options.batch_size)
    save_images(results, options.output_dir, options.overwrite)
    if options.text is not None:
        print(results[0]["output"])  # the text itself: a table would wrap it
    else:
        print_table(results)
    if options.output:
        with open(options.output, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
