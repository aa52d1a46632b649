"""``zoo explain``: where an image classifier looks, as PNG overlays (integrated gradients, saliency, attention).

zoo explain --ckpt_path logs/mnist_cnn/version_0/checkpoints/last.ckpt --inputs digit.png --output explain/
zoo explain --ckpt_path CKPT --inputs digit.png cat.jpg --method saliency --output explain/
zoo explain --ckpt_path CKPT --data_samples 4 --data MNIST --data_dir ../shared/data/mnist   # labelled test images
zoo explain --model vit_tiny_patch4_32 --inputs cat.png --method attention   # untrained weights

Images are preprocessed as the checkpoint's training data was (the size, channels, mean and std its datamodule saved
into the checkpoint, read once with ``weights_only=True`` after its CRC check). ``--data_samples N`` explains the
first N test images of the datamodule named by ``--data`` (read from ``--data_dir``), with their labels. Each input
gives one PNG: the image, and the map over it titled with the predicted class and its probability. ``--method
attention`` draws a ViT's attention rollout from the class token.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

import zoo
from datamodules import get_datamodule_class
from recipes.tools.command import check_output_folder, exactly_one, named_errors, parse, tool_parser
from recipes.tools.inference import InferenceModel
from recipes.tools.interpret import attention_heatmap, integrated_gradients, saliency
from recipes.tools.predictor import Predictor
from zoo.tasks import ImageClassifier

METHODS = ("ig", "saliency", "attention")
#: Size of each PNG in pixels (width, height).
FIGURE_SIZE = (640, 320)


def _predictor(options) -> Predictor:
    """The model and the data's preprocessing, from a checkpoint (read once) or a preset (no normalization)."""
    if options.ckpt_path:
        predictor = Predictor.from_checkpoint(options.ckpt_path)
    else:
        predictor = Predictor.from_model(zoo.create_model(options.model))
        print(f"{options.model}: freshly initialized weights (give --ckpt_path for a trained model)")
    if not isinstance(predictor.model, ImageClassifier):
        raise ValueError(
            f"zoo explain takes image classifiers; {predictor.model_name} is not one "
            "(recipes.tools.interpret.attention_maps shows the attention of sequence models)"
        )
    return predictor


def _data_samples(count: int, data: str, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` test images (normalized, as the datamodule yields them) and their labels."""
    cls = get_datamodule_class(data)
    kwargs = {"data_dir": data_dir} if data_dir else {}
    if "download" in cls.__init__.__code__.co_varnames:
        kwargs["download"] = False  # explaining never downloads; a missing file is named instead
    datamodule = cls(**kwargs)
    datamodule.prepare_data()
    datamodule.setup("test")
    images, labels = [], []
    for x, y, *_ in datamodule.test_dataloader():
        images.append(x)
        labels.append(y)
        if sum(len(part) for part in images) >= count:
            break
    return torch.cat(images)[:count], torch.cat(labels)[:count]


def _maps(model: ImageClassifier, x: torch.Tensor, options, module: InferenceModel) -> torch.Tensor:
    """``(B, H, W)`` maps of the predicted (or ``--target``) class for normalized inputs ``x``."""
    if options.method == "saliency":
        return saliency(model, x, options.target)
    if options.method == "attention":
        if not isinstance(model, zoo.VisionTransformer):
            raise ValueError(
                f"--method attention needs a VisionTransformer; {type(model).__name__} has no attention over image "
                "patches (use ig or saliency)"
            )
        return attention_heatmap(model, x)
    black = module.normalize(torch.zeros(1, *x.shape[1:], dtype=torch.uint8))
    baseline = None if options.baseline == "mean" else black  # zeros after normalization are the mean image
    result = integrated_gradients(
        model, x, options.target, baseline, steps=options.steps, chunk_size=options.chunk_size
    )
    worst = result.delta.abs().max().item()
    print(f"integrated gradients, {options.steps} steps: largest |convergence delta| {worst:.3g}")
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


def main(args: Sequence[str] | None = None) -> list[Path]:
    """Run ``zoo explain`` with ``args`` as on the command line (without the word ``explain``); the PNGs written."""
    parser = tool_parser("explain", __doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=str | None, default=None, help="a checkpoint of a zoo image classifier")
    parser.add_argument("--model", type=str | None, default=None, help="a registered preset (untrained weights)")
    parser.add_argument("--inputs", nargs="+", type=str, default=None, help="image files")
    parser.add_argument("--data_samples", type=int | None, default=None, help="the first N test images of --data")
    parser.add_argument("--data", type=str | None, default=None, help="the datamodule of --data_samples (MNIST, ...)")
    parser.add_argument("--data_dir", type=str | None, default=None, help="where that datamodule reads")
    parser.add_argument("--method", type=str, default="ig", help="ig (integrated gradients), saliency or attention")
    parser.add_argument("--output", type=str, default="explain", help="folder of the PNGs")
    parser.add_argument("--overwrite", type=bool, default=False, help="replace PNGs of the same names in --output")
    parser.add_argument("--target", type=int | None, default=None, help="explain this class, not the predicted one")
    parser.add_argument("--steps", type=int, default=50, help="integrated-gradients steps")
    parser.add_argument("--chunk_size", type=int, default=64, help="scaled inputs per forward")
    parser.add_argument("--baseline", type=str, default="black", help="IG reference: black (image) or mean (data)")
    options = parse(parser, args)
    exactly_one(parser, options, "ckpt_path", "model")
    exactly_one(parser, options, "inputs", "data_samples")
    if options.method not in METHODS or options.baseline not in ("black", "mean"):
        parser.error(f"--method must be one of {', '.join(METHODS)} and --baseline black or mean")
    if options.data_samples is not None and (options.data_samples < 1 or not options.data):
        parser.error("--data_samples needs N >= 1 and --data (the datamodule whose test images to explain)")
    if options.steps < 2:
        parser.error(f"--steps must be >= 2, got {options.steps}")
    output = check_output_folder(options.output, (), options.overwrite)  # not a file
    with named_errors():
        predictor = _predictor(options)
        model = predictor.model
        module = InferenceModel(model, predictor.preprocessing)
        if options.target is not None and not 0 <= options.target < model.num_classes:
            raise ValueError(f"--target must be a class index in [0, {model.num_classes}), got {options.target}")
        if options.inputs:
            pixels = torch.stack([predictor.load_image(path) for path in options.inputs])  # uint8 (B, C, H, W)
            x, labels, names = module.normalize(pixels), None, [Path(path).stem for path in options.inputs]
        else:
            x, labels = _data_samples(options.data_samples, options.data, options.data_dir)
            names = [f"sample{index}" for index in range(len(x))]
        files = [f"{index:02d}_{name}_{options.method}.png" for index, name in enumerate(names)]
        check_output_folder(output, files, options.overwrite)  # before the maps are computed
        with torch.no_grad():
            probabilities = model(x).softmax(dim=1)
        heat = _maps(model, x, options, module)
    shown_images = (x * module.input_std.view(1, -1, 1, 1) + module.input_mean.view(1, -1, 1, 1)).clamp(0, 1)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    method = {"ig": "integrated gradients", "saliency": "saliency", "attention": "attention rollout"}[options.method]
    for index, (name, file) in enumerate(zip(names, files, strict=True)):
        predicted = int(probabilities[index].argmax())
        shown = predicted if options.target is None else options.target
        title = f"{method} of class {shown}\npredicted {predicted} ({probabilities[index, predicted]:.0%})"
        subtitle = f"{name}" + ("" if labels is None else f"\nlabel {int(labels[index])}")
        path = output / file
        _save_overlay(path, shown_images[index], heat[index].detach(), title, subtitle)
        written.append(path)
        print(path)
    return written


if __name__ == "__main__":
    main()
