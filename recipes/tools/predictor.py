"""Answers of a zoo model for images, tensors or text: what ``zoo predict``, ``zoo serve`` and ``zoo explain`` use.

A :class:`Predictor` reads inputs, checks them against the model's input, runs the
:class:`~recipes.tools.inference.InferenceModel` (or the same graph exported to ONNX) and turns the outputs into
answers with the task's ``answers`` (top-k classes, forecasts in original units, images, decoded text). A checkpoint
is read once (:func:`zoo.read_checkpoint`); its class is imported only from the zoo; no datamodule is built and no
data path is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

import zoo
from datamodules.base import IMAGE_EXTENSIONS, decode_image
from recipes.tools.export import read_onnx_metadata
from recipes.tools.inference import InferenceModel, Preprocessing, resolve_preprocessing
from zoo.checkpoint import checkpoint_class, data_preprocessing, model_from_checkpoint, read_checkpoint
from zoo.tasks import ImageClassifier, TaskModule
from zoo.tasks.language_model import sample_tokens


class InputError(ValueError):
    """Input that does not fit the model; the message names what is expected."""


# --- reading inputs ------------------------------------------------------------------------------------------------


def collect_images(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Files named in ``paths``, and image files (by ending) under the folders among them, recursively and sorted.

    Raises:
        FileNotFoundError: naming a path that does not exist, or a folder without image files.
    """
    files: list[str] = []
    for path in map(str, paths):
        if os.path.isdir(path):
            found = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(path)
                for name in names
                if name.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                raise FileNotFoundError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return files


def _describe_shape(shape: Sequence[int | None]) -> str:
    """``(B, 1, 8, 8)``: free dimensions by their usual letters."""
    names = "BCHW" if len(shape) == 4 else "BTF"
    return "(" + ", ".join(str(dim) if dim is not None else names[i % len(names)] for i, dim in enumerate(shape)) + ")"


# --- backends -----------------------------------------------------------------------------------------------------


class _OnnxBackend:
    """An exported :class:`InferenceModel` run by onnxruntime: named outputs as tensors."""

    def __init__(self, path: str, output_names: Sequence[str]) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: the dynamo exporter's files draw harmless warnings
        # As many threads as torch uses (OMP_NUM_THREADS), not one per core: onnxruntime's default spins them all.
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.output_names = tuple(output_names)

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.session.run(None, {self.input.name: x.numpy()})
        return {name: torch.from_numpy(value) for name, value in zip(self.output_names, outputs, strict=True)}


class _TorchBackend:
    def __init__(self, module: InferenceModel) -> None:
        self.module = module.eval()
        self.output_names = module.output_names

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            return dict(zip(self.output_names, self.module(x), strict=True))


class Predictor:
    """Answers of a zoo model from a checkpoint (:meth:`from_checkpoint`), an ONNX file written by ``zoo export``
    (:meth:`from_onnx`) or a model in memory (:meth:`from_model`); :meth:`load` picks by the file.

    Args:
        backend: maps an input batch to the named outputs of the model's ``predict_tensors``.
        task: the model's class; its ``answers`` (a class method) turns outputs into answers.
        hparams: the model's hyperparameters.
        preprocessing: the data's preprocessing.
        input_shape: the input's shape, ``None`` for free dimensions (the batch first).
        input_dtype: ``"uint8"``, ``"float32"`` or ``"int64"``.
        source: the file the model came from.
        model: the zoo model itself when there is one (text generation reuses its cache).
    """

    #: The most pixels of one image that :meth:`load_image` decodes.
    max_pixels: int = 4096 * 4096

    def __init__(
        self,
        backend: Callable[[torch.Tensor], dict[str, torch.Tensor]],
        task: type[TaskModule],
        hparams: Mapping[str, Any],
        preprocessing: Preprocessing,
        input_shape: Sequence[int | None],
        input_dtype: str,
        source: str,
        model: TaskModule | None = None,
    ) -> None:
        self.backend, self.task, self.hparams, self.preprocessing = backend, task, dict(hparams), preprocessing
        self.input_shape, self.input_dtype, self.source, self.model = list(input_shape), input_dtype, source, model
        self.model_name = task.__name__

    # --- construction ----------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Predictor:
        """A predictor over an ONNX file (ending ``.onnx``) or else a checkpoint."""
        return cls.from_onnx(path) if str(path).lower().endswith(".onnx") else cls.from_checkpoint(path)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], tta: str | None = None) -> Predictor:
        """A predictor over the zoo model of a checkpoint, with the preprocessing its datamodule saved (one read);
        ``tta`` as in :meth:`from_model`."""
        checkpoint = read_checkpoint(path)
        model = model_from_checkpoint(checkpoint, str(path))
        return cls.from_model(model, data_preprocessing(checkpoint), str(path), tta=tta)

    @classmethod
    def from_pretrained(cls, preset: str, tta: str | None = None) -> Predictor:
        """A predictor over a preset's published weights (:mod:`zoo.weights`), with the preprocessing of the data
        they were trained on; ``tta`` as in :meth:`from_model`."""
        weights = zoo.get_weights(preset)
        model = zoo.create_model(preset, pretrained=True)
        return cls.from_model(model, weights.preprocessing or None, f"the published weights of {preset}", tta=tta)

    @classmethod
    def from_model(
        cls,
        model: TaskModule,
        data: Mapping[str, Any] | Preprocessing | None = None,
        source: str = "memory",
        tta: str | None = None,
    ) -> Predictor:
        """A predictor over a zoo model in memory (put in eval mode); ``data`` is the data's preprocessing (none:
        the model's own sizes and vocabulary, without normalization).

        ``tta`` sets an image classifier's test-time augmentation (``"none"``, ``"flip"``, ``"flip_shift"``,
        ``"flip_crop"``: the class probabilities averaged over flipped and shifted views, see
        :class:`~zoo.tasks.ImageClassifier`);
        ``None`` keeps the model's own.

        Raises:
            ValueError: for a ``tta`` other than ``None`` on a model that is no image classifier, or an unknown one.
        """
        if not isinstance(model, TaskModule):
            raise TypeError(f"a predictor runs zoo models (TaskModule), got {type(model).__name__}")
        if tta is not None:
            if not isinstance(model, ImageClassifier):
                raise ValueError(
                    f"tta applies to image classifiers; {type(model).__name__} is not one (leave --tta out)"
                )
            model.tta = tta  # before InferenceModel: its outputs are those of predict_tensors
        pre = resolve_preprocessing(model, data.to_dict() if isinstance(data, Preprocessing) else data)
        module = InferenceModel(model, pre)
        example = module.example_input_array
        shape = [None, *example.shape[1:]]
        if pre.input in ("text", "tokens") and example.ndim == 2:
            shape[1] = None  # any length up to the model's limit
        dtype = str(example.dtype).removeprefix("torch.")
        return cls(_TorchBackend(module), type(model), model.hparams, pre, shape, dtype, source, model=model)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike[str]) -> Predictor:
        """A predictor over an ONNX file written by ``zoo export``, described by its ``zoo.*`` metadata.

        Raises:
            FileNotFoundError: when ``path`` is not a file.
            ValueError: naming ``path`` when onnxruntime cannot read it or its metadata is missing or not JSON.
        """
        meta = read_onnx_metadata(path)
        task = checkpoint_class({"model_class_path": meta["class_path"]}, str(path))
        try:
            backend = _OnnxBackend(str(path), meta["outputs"])
        except Exception as error:  # onnxruntime raises its own exception types for unreadable files
            raise ValueError(f"{path} is not a readable ONNX model ({type(error).__name__}: {error})") from error
        pre = Preprocessing.from_dict(meta["preprocessing"])
        # The graph knows which axes it exported as dynamic (a language model's time axis beside the batch).
        graph = [dim if isinstance(dim, int) else None for dim in backend.input.shape]
        shape = [None if free is None else dim for dim, free in zip(meta["input_shape"], graph, strict=False)]
        return cls(backend, task, meta["hyper_parameters"], pre, shape, meta["input_dtype"], str(path))

    # --- what the model reads --------------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """``"image"``, ``"series"``, ``"tokens"``, ``"text"`` or ``"features"``."""
        return self.preprocessing.input

    @property
    def classes(self) -> list[str] | None:
        """Class names by index, when the data gave them."""
        return list(self.preprocessing.classes) if self.preprocessing.classes else None

    def input_spec(self) -> str:
        """What the model reads, in words."""
        if self.kind == "text":
            return f"text in a vocabulary of {len(self.preprocessing.vocab or '')} characters"
        if self.kind == "image":
            return f"images, or uint8 tensors of shape {_describe_shape(self.input_shape)}"
        return f"tensors of shape {_describe_shape(self.input_shape)} {self.input_dtype}"

    def metadata(self) -> dict[str, Any]:
        """The model, its classes and what it reads, as JSON-ready values."""
        return {
            "model": self.model_name,
            "task": next(base.__name__ for base in self.task.__mro__ if base.__module__.startswith("zoo.tasks.")),
            "source": "onnx" if self.model is None else "checkpoint",
            "classes": self.classes,
            "input": {
                "kind": self.kind,
                "shape": self.input_shape,
                "dtype": self.input_dtype,
                "preprocess": self.preprocessing.to_dict(),
            },
        }

    def check_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as a batch of the model's dtype; one sample without the batch dimension gets one.

        Raises:
            InputError: naming the expected shape and dtype when ``x`` does not fit.
        """
        expected = f"{_describe_shape(self.input_shape)} {self.input_dtype}"
        if self.input_shape and x.ndim == len(self.input_shape) - 1:
            x = x.unsqueeze(0)
        floating = self.input_dtype.startswith("float")
        if x.dtype == torch.bool or x.is_complex() or (not floating and x.is_floating_point()):
            raise InputError(f"{self.model_name} expects inputs of shape {expected}, got dtype {x.dtype}")
        shape_ok = x.ndim == len(self.input_shape) and all(
            want is None or want == got for want, got in zip(self.input_shape, x.shape, strict=True)
        )
        if not shape_ok or 0 in x.shape:
            raise InputError(
                f"{self.model_name} expects inputs of shape {expected}, got shape {tuple(x.shape)} "
                "(the batch dimension first)"
            )
        if not floating:
            low, high = int(x.min()), int(x.max())
            limit = 256 if self.input_dtype == "uint8" else self.hparams.get("vocab_size") or None
            if low < 0 or (limit is not None and high >= limit):
                what = "pixel values" if self.input_dtype == "uint8" else "token ids"
                raise InputError(f"{self.model_name} reads {what} in [0, {(limit or 1) - 1}], got [{low}, {high}]")
        x = x.to(getattr(torch, self.input_dtype))
        if floating and not torch.isfinite(x).all():  # NaN, Inf, or a value beyond the dtype's range (1e308)
            position = tuple(index.item() for index in (~torch.isfinite(x)).nonzero()[0])
            raise InputError(
                f"{self.model_name} reads finite numbers; the input at position {position} is {x[position].item()} "
                f"(NaN, infinite, or beyond {self.input_dtype}'s range)"
            )
        return x

    def load_image(self, source: str | os.PathLike[str] | bytes, name: str | None = None) -> torch.Tensor:
        """One image file (or its encoded bytes) as uint8 ``(C, H, W)`` at the model's size.

        Raises:
            InputError: when the model reads no images.
            datamodules.base.ImageTooLargeError, ImageDecodeError: naming the file (too many pixels; not an image).
        """
        if self.kind != "image":
            raise InputError(f"{self.model_name} does not read images; it reads {self.input_spec()}")
        pre = self.preprocessing
        pixels = decode_image(source, pre.in_channels or 3, name, max_pixels=self.max_pixels)
        if pre.img_size is not None and tuple(pixels.shape[1:]) != tuple(pre.img_size):
            from torchvision.transforms.v2.functional import resize

            pixels = resize(pixels, list(pre.img_size), antialias=True)
        return pixels

    # --- answers -----------------------------------------------------------------------------------------------------
    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The named outputs of the model's ``predict_tensors`` for a batch (checked by :meth:`check_tensor`).

        Raises:
            InputError: for input the checks or the model's own ``check_input`` refuse.
        """
        x = self.check_tensor(x)
        try:
            return self.backend(x)
        except ValueError as error:  # the zoo models' input checks name what they expect
            raise InputError(str(error)) from error

    def predict_tensor(self, x: torch.Tensor, top_k: int = 5, names: Sequence[str] | None = None) -> list[dict]:
        """One answer per sample, as the model's task gives it (top-k classes, a forecast, an image, ...)."""
        answers = self.task.answers(self.outputs(x), self.preprocessing.to_dict(), top_k)
        names = list(names) if names is not None else [str(index) for index in range(len(answers))]
        return [{"input": name, **answer} for name, answer in zip(names, answers, strict=True)]

    def predict_images(
        self,
        sources: Sequence[str | os.PathLike[str] | bytes],
        top_k: int = 5,
        names: Sequence[str] | None = None,
        batch_size: int = 64,
    ) -> list[dict]:
        """Answers for image files (or encoded bytes), ``batch_size`` images per forward."""
        names = list(names) if names is not None else [str(source) for source in sources]
        results: list[dict] = []
        for start in range(0, len(sources), batch_size):
            chunk = range(start, min(start + batch_size, len(sources)))
            batch = torch.stack([self.load_image(sources[i], names[i]) for i in chunk])
            results += self.predict_tensor(batch, top_k, [names[i] for i in chunk])
        return results

    def predict_text(
        self,
        text: str,
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = None,
        seed: int = 0,
    ) -> dict[str, Any]:
        """A language model's continuation of ``text``, or a sequence-to-sequence model's answer to it.

        Raises:
            InputError: naming the characters outside the vocabulary, or when the model reads no text.
        """
        if self.kind != "text":
            raise InputError(f"{self.model_name} does not read text; it reads {self.input_spec()}")
        if max_new_tokens < 0 or temperature < 0 or (top_k is not None and top_k < 1):
            raise InputError("need max_new_tokens >= 0, temperature >= 0 and top_k >= 1 (or none)")
        spec = self.preprocessing.to_dict()
        try:
            ids = self.task.text_to_ids(text, spec).unsqueeze(0)  # (1, T)
        except ValueError as error:
            raise InputError(str(error)) from error
        if not self.task.generates_text:
            (answer,) = self.task.answers(self.outputs(ids), spec, 1)
            return {"input": text, **answer}
        generator = torch.Generator().manual_seed(seed)
        block = self.hparams.get("block_size") or ids.shape[1] + max_new_tokens
        try:
            if self.model is not None:  # the model's own cache
                out = self.model.generate(ids, max_new_tokens, temperature, top_k, generator)
            else:
                out = sample_tokens(
                    lambda ids: self.outputs(ids[:, -block:])["logits"][:, -1],
                    ids,
                    max_new_tokens,
                    temperature,
                    top_k,
                    generator,
                )
        except ValueError as error:  # the model's own checks (a prompt longer than its block size, ...)
            raise InputError(str(error)) from error
        output = self.task.ids_to_text(out[0], spec)
        return {"input": text, "output": output, "continuation": output[len(text) :]}
