"""``zoo explain``: where an image classifier looks, as PNG overlays (integrated gradients, saliency, attention).

zoo explain --ckpt_path logs/mnist_cnn/version_0/checkpoints/last.ckpt --data-samples 4 --output explain/
zoo explain --ckpt_path CKPT --inputs digit.png cat.jpg --method saliency --output explain/
zoo explain --ckpt_path CKPT --data-samples 4 --data_dir /work/shared/data/mnist   # the data moved since training
zoo explain --model vit_tiny_patch4_32 --data CIFAR10 --inputs cat.png --method attention   # untrained weights

Images are preprocessed as the checkpoint's training data was (its datamodule's size, mean and std, read from the
checkpoint with ``weights_only=True`` after its CRC check); ``--data-samples N`` explains the first N test images
of that datamodule, with their labels. Each input gives one PNG: the image, and the map over it titled with the
predicted class and its probability. ``--method attention`` draws a ViT's attention rollout from the class token.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms.v2 import functional as TF

import zoo
from datamodules import get_datamodule_class
from datamodules.base import decode_image
from zoo.checkpoint import import_class, read_checkpoint
from zoo.interpret import attention_heatmap, integrated_gradients, saliency
from zoo.tasks import ImageClassifier

METHODS = ("ig", "saliency", "attention")
#: Size of each PNG in pixels (width, height).
FIGURE_SIZE = (640, 320)


@dataclass(frozen=True)
class Preprocessing:
    """How images became model inputs in training: resized to ``img_size``, scaled to [0, 1], normalized."""

    in_channels: int
    img_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 ``(C, H, W)`` -> float ``(C, *img_size)``, normalized."""
        if tuple(image.shape[-2:]) != self.img_size:
            image = TF.resize(image, list(self.img_size), antialias=True)
        return (image.float() / 255 - self._stat(self.mean)) / self._stat(self.std)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized ``(..., C, H, W)`` back to [0, 1] pixels."""
        return (x * self._stat(self.std) + self._stat(self.mean)).clamp(0, 1)

    def _stat(self, values: tuple[float, ...]) -> torch.Tensor:
        return torch.tensor(values).view(-1, 1, 1)  # (C,) -> (C, 1, 1)


def datamodule_class(hparams: Mapping[str, Any] | None, data: str | None) -> type | None:
    """The datamodule named by ``--data``, else the one a checkpoint's datamodule hyperparameters name. Only classes
    of the ``datamodules`` package are imported: importing a module runs its code."""
    if data:
        try:
            return get_datamodule_class(data)
        except ValueError as error:
            raise SystemExit(f"error: --data: {error}") from None
    class_path = (hparams or {}).get("_class_path") or ""
    try:
        return import_class(class_path, trusted=("datamodules",))
    except ValueError:
        return None


def preprocessing_for(
    model: ImageClassifier, hparams: Mapping[str, Any] | None, dm_class: type | None
) -> Preprocessing:
    """The training preprocessing: the datamodule's saved arguments first, then its class attributes, then the
    model's own sizes; without a datamodule, no normalization (mean 0, std 1), said on stdout."""
    hparams = hparams or {}

    def lookup(key: str) -> Any:
        value = hparams.get(key)
        return value if value is not None else getattr(dm_class, key, None)

    channels = model.in_channels
    size = lookup("img_size") or model.img_size
    size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    mean, std = lookup("mean"), lookup("std")
    if mean is None or std is None:
        print("No datamodule known (give --data NAME): inputs are scaled to [0, 1] and not normalized.")
        mean, std = (0.0,) * channels, (1.0,) * channels
    if len(mean) != channels or len(std) != channels:
        raise SystemExit(
            f"error: the datamodule's mean {mean} and std {std} do not fit the model's {channels} channels"
        )
    return Preprocessing(channels, size, tuple(map(float, mean)), tuple(map(float, std)))


def _load_model(args: argparse.Namespace) -> tuple[ImageClassifier, dict[str, Any] | None]:
    if args.ckpt_path:
        try:
            model = zoo.load_from_checkpoint(args.ckpt_path)
            hparams = read_checkpoint(args.ckpt_path).get("datamodule_hyper_parameters")
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f"error: --ckpt_path: {error}") from None
    else:
        try:
            model = zoo.create_model(args.model)
        except Exception as error:  # unknown names raise UnknownModelError, bad presets anything
            raise SystemExit(f"error: --model: {error}") from None
        print(f"{args.model}: freshly initialized weights (give --ckpt_path for a trained model)")
        hparams = None
    if not isinstance(model, ImageClassifier):
        raise SystemExit(
            f"error: zoo explain takes image classifiers; {type(model).__name__} is not one "
            "(zoo.interpret.attention_maps shows the attention of sequence models)"
        )
    return model.eval(), hparams


def _read_images(paths: Sequence[str], prep: Preprocessing) -> tuple[torch.Tensor, list[str]]:
    images = []
    for path in paths:
        if not Path(path).is_file():
            raise SystemExit(f"error: --inputs: {path}: no such image file")
        try:
            images.append(prep(decode_image(path, prep.in_channels)))
        except ValueError as error:
            raise SystemExit(f"error: --inputs: {error}") from None
    return torch.stack(images), [Path(path).stem for path in paths]


def _data_samples(
    count: int, dm_class: type | None, hparams: Mapping[str, Any] | None, data_dir: str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` test images (normalized, as the datamodule yields them) and their labels."""
    if dm_class is None:
        raise SystemExit(
            "error: --data-samples needs the training datamodule: give a checkpoint written by a zoo recipe, or "
            "--data NAME (Digits, MNIST, CIFAR10, ...)"
        )
    init = {key: value for key, value in (hparams or {}).items() if not key.startswith("_")}
    if data_dir:
        init["data_dir"] = data_dir
    if "download" in init or hparams is None:
        init["download"] = False  # explaining never downloads; a missing file is named instead
    try:
        datamodule = dm_class(**init)
        datamodule.prepare_data()
        datamodule.setup("test")
        images, labels = [], []
        for x, y, *_ in datamodule.test_dataloader():
            images.append(x)
            labels.append(y)
            if sum(len(part) for part in images) >= count:
                break
    except (FileNotFoundError, ValueError, RuntimeError, TypeError) as error:
        raise SystemExit(f"error: --data-samples: {dm_class.__name__} cannot read its test split: {error}") from None
    return torch.cat(images)[:count], torch.cat(labels)[:count]


def _maps(model: ImageClassifier, x: torch.Tensor, args: argparse.Namespace, prep: Preprocessing) -> torch.Tensor:
    """``(B, H, W)`` maps of the predicted (or ``--target``) class."""
    if args.method == "saliency":
        return saliency(model, x, args.target)
    if args.method == "attention":
        if not isinstance(model, zoo.VisionTransformer):
            raise SystemExit(
                f"error: --method attention needs a VisionTransformer; {type(model).__name__} has no attention "
                "over image patches (use ig or saliency)"
            )
        return attention_heatmap(model, x)
    black = torch.zeros(prep.in_channels, *prep.img_size, dtype=torch.uint8)
    baseline = None if args.baseline == "mean" else prep(black)  # zeros after normalization are the mean image
    result = integrated_gradients(model, x, args.target, baseline, steps=args.steps, chunk_size=args.chunk_size)
    worst = result.delta.abs().max().item()
    print(f"integrated gradients, {args.steps} steps: largest |convergence delta| {worst:.3g}")
    return result.attributions.abs().sum(dim=1)  # (B, C, H, W) -> (B, H, W)


def _save_overlay(path: Path, image: torch.Tensor, heat: torch.Tensor, title: str, subtitle: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    figure = Figure(figsize=(FIGURE_SIZE[0] / dpi, FIGURE_SIZE[1] / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    pixels = image.permute(1, 2, 0).numpy()  # (C, H, W) -> (H, W, C)
    grey = pixels.shape[-1] == 1
    shown = pixels[..., 0] if grey else pixels
    heat = heat / heat.flatten().quantile(0.99).clamp_min(1e-12)  # a few extreme pixels must not wash out the rest
    for axis, name in ((left, subtitle), (right, title)):
        axis.imshow(shown, cmap="gray" if grey else None, vmin=0, vmax=1, interpolation="nearest")
        axis.set_title(name, fontsize=9)
        axis.axis("off")
    right.imshow(heat.clamp(0, 1).numpy(), cmap="inferno", alpha=0.6, vmin=0, vmax=1, interpolation="nearest")
    figure.savefig(path, dpi=dpi)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo explain", description=__doc__.split("\n\n")[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--ckpt_path", "--ckpt-path", help="a checkpoint written by a zoo recipe")
    model.add_argument("--model", help="a registered preset (untrained weights)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--inputs", nargs="+", metavar="IMG", help="image files")
    source.add_argument("--data-samples", "--data_samples", type=int, metavar="N", help="the first N test images")
    parser.add_argument("--method", choices=METHODS, default="ig", help="default: ig (integrated gradients)")
    parser.add_argument("--output", default="explain", help="folder of the PNGs (default: explain)")
    parser.add_argument("--target", type=int, help="explain this class instead of the predicted one")
    parser.add_argument("--data", help="datamodule name for the preprocessing (default: the checkpoint's)")
    parser.add_argument("--data_dir", "--data-dir", help="where the datamodule reads (default: as in training)")
    parser.add_argument("--steps", type=int, default=50, help="integrated-gradients steps (default 50)")
    parser.add_argument("--chunk_size", "--chunk-size", type=int, default=64, help="scaled inputs per forward")
    parser.add_argument(
        "--baseline", choices=("black", "mean"), default="black", help="IG reference: a black image or the data mean"
    )
    return parser


def main(args: Sequence[str] | None = None) -> list[Path]:
    """Run ``zoo explain`` with ``args`` as on the command line (without the word ``explain``); the PNGs written."""
    options = build_parser().parse_args(args)
    if options.data_samples is not None and options.data_samples < 1:
        raise SystemExit(f"error: --data-samples must be >= 1, got {options.data_samples}")
    if options.steps < 2:
        raise SystemExit(f"error: --steps must be >= 2, got {options.steps}")
    model, hparams = _load_model(options)
    dm_class = datamodule_class(hparams, options.data)
    prep = preprocessing_for(model, hparams, dm_class)
    if options.target is not None and not 0 <= options.target < model.num_classes:
        raise SystemExit(f"error: --target must be a class index in [0, {model.num_classes}), got {options.target}")
    if options.inputs:
        x, names = _read_images(options.inputs, prep)
        labels = None
    else:
        x, labels = _data_samples(options.data_samples, dm_class, hparams, options.data_dir)
        names = [f"sample{index}" for index in range(len(x))]
    try:
        with torch.no_grad():
            probabilities = model(x).softmax(dim=1)
        heat = _maps(model, x, options, prep)
    except ValueError as error:  # the model's input check names the shape it expects
        raise SystemExit(f"error: {error}") from None
    output = Path(options.output)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    method = {"ig": "integrated gradients", "saliency": "saliency", "attention": "attention rollout"}[options.method]
    for index, name in enumerate(names):
        predicted = int(probabilities[index].argmax())
        shown = predicted if options.target is None else options.target
        title = f"{method} of class {shown}\npredicted {predicted} ({probabilities[index, predicted]:.0%})"
        subtitle = f"{name}" + ("" if labels is None else f"\nlabel {int(labels[index])}")
        path = output / f"{index:02d}_{name}_{options.method}.png"
        _save_overlay(path, prep.denormalize(x[index]), heat[index].detach(), title, subtitle)
        written.append(path)
        print(path)
    return written


if __name__ == "__main__":
    main()
