"""Predictions from a zoo checkpoint or an ONNX file, with the evaluation preprocessing of the model's training data.

A :class:`Predictor` reads images (resized to the model's ``img_size``, converted to grayscale or RGB as its
``in_channels`` say, normalized with the data's ``mean``/``std``), tensors, or text (a language model's vocabulary),
and answers top-k classes with probabilities and, where the data named them, class names.

The preprocessing travels with the model: a checkpoint written by the recipes holds the datamodule's
hyperparameters (its ``_class_path`` names a class of the ``datamodules`` package, whose ``mean``, ``std`` and
``classes`` are read); an ONNX file holds it as JSON in its ``zoo.preprocess`` metadata (see :data:`METADATA_KEYS`).

Loading stays safe: a checkpoint through :func:`zoo.load_from_checkpoint` (tensors only, CRC-checked, zoo classes
only), an ONNX file through onnxruntime; no pickle is ever read.

>>> Preprocessing(in_channels=1, img_size=(8, 8), mean=(0.5,), std=(0.5,)).to_dict()["img_size"]
[8, 8]
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from PIL import Image

from zoo.checkpoint import import_class, read_checkpoint

#: The ONNX ``metadata_props`` a predictor reads (string values; JSON where marked). ``zoo.preprocess`` is
#: :meth:`Preprocessing.to_dict` as JSON.
METADATA_KEYS = {
    "class_path": "zoo.class_path",
    "hyper_parameters": "zoo.hyper_parameters",  # JSON
    "input_shape": "zoo.input_shape",  # JSON list, null for dynamic dims (the batch)
    "input_dtype": "zoo.input_dtype",  # "float32" or "int64"
    "task": "zoo.task",  # the task base's class name, e.g. "ImageClassifier"
    "preprocess": "zoo.preprocess",  # JSON, Preprocessing.to_dict()
}
#: File endings collected from folders (a file named on the command line is read whatever its ending).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")
#: PIL modes read as images of 8-bit channels; others (16-bit, float, CMYK, ...) have no single right conversion.
IMAGE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX")
TEXT_TASKS = ("LanguageModel", "Seq2SeqTask")

InputKind = Literal["image", "text", "tensor"]


class InputError(ValueError):
    """Input a predictor cannot read; ``status`` is the HTTP status a server answers it with (422: the content does
    not fit the model, 415: not an image at all)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What turns raw input into the model's input, as the training data did at evaluation time.

    Args:
        in_channels: image channels (1: grayscale, 3: RGB).
        img_size: image ``(height, width)``.
        mean: per-channel mean in [0, 1] units (``None``: pixels are only scaled to [0, 1]).
        std: per-channel standard deviation in [0, 1] units.
        classes: class names by index (``None`` when the data named none).
        vocab: a character vocabulary in id order (text models).
    """

    in_channels: int | None = None
    img_size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    classes: tuple[str, ...] | None = None
    vocab: str | None = None

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        if self.mean is not None and self.in_channels and not len(self.mean) == len(self.std) == self.in_channels:
            raise ValueError(f"mean and std need {self.in_channels} values, got {self.mean} and {self.std}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (lists for tuples); the ``zoo.preprocess`` metadata of an ONNX file."""
        return {
            field.name: list(value) if isinstance(value, tuple) else value
            for field in dataclasses.fields(self)
            for value in [getattr(self, field.name)]
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        """The inverse of :meth:`to_dict`; unknown keys are ignored (written by a newer version)."""
        known = {field.name for field in dataclasses.fields(cls)}
        kwargs = {key: value for key, value in values.items() if key in known and value is not None}
        for key in ("img_size", "mean", "std", "classes"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


def datamodule_preprocessing(data_hparams: dict[str, Any] | None) -> dict[str, Any]:
    """``mean``, ``std``, ``img_size``, ``in_channels`` and ``classes`` of the datamodule a recipe
    checkpoint names (what is known of them).

    Only classes of the ``datamodules`` package are imported. Values saved as hyperparameters (an image folder's
    ``mean``) win over class attributes; class names that come from files (an image folder's) are read when the
    files are still there.
    """
    class_path = (data_hparams or {}).get("_class_path") or ""
    try:
        cls = import_class(class_path, trusted=("datamodules",))
    except ValueError:
        return {}
    found: dict[str, Any] = {}
    for key in ("mean", "std", "img_size", "in_channels", "classes"):
        value = data_hparams.get(key, getattr(cls, key, None))
        if isinstance(value, (int, float, str, list, tuple)) and not isinstance(value, bool):
            found[key] = value
    if "classes" not in found:
        init = {key: value for key, value in data_hparams.items() if not key.startswith("_")}
        try:  # class names read from files (an image folder's): the files may be gone, which only loses the names
            classes = getattr(cls(**init), "classes", None)
        except Exception:  # any failure to rebuild the datamodule (missing files, changed arguments)
            classes = None
        if isinstance(classes, (list, tuple)) and classes:
            found["classes"] = classes
    if isinstance(found.get("img_size"), int):
        found["img_size"] = (found["img_size"], found["img_size"])
    return found


def checkpoint_preprocessing(path: str | os.PathLike[str], model: torch.nn.Module | None = None) -> Preprocessing:
    """The evaluation preprocessing of the data a checkpoint's model was trained on.

    The model's own sizes (``in_channels``, ``img_size``, ``vocab``) win over the data's, since they are what the
    network reads. A checkpoint written outside the recipes (no datamodule hyperparameters) gets no normalization.
    """
    checkpoint = read_checkpoint(path)
    found = datamodule_preprocessing(checkpoint.get("datamodule_hyper_parameters"))
    hparams = checkpoint.get("hyper_parameters") or {}
    for key in ("in_channels", "img_size", "vocab"):
        value = getattr(model, key, None) if model is not None else None
        value = value if value is not None else hparams.get(key)
        if value:
            found[key] = value
    if isinstance(found.get("img_size"), int):
        found["img_size"] = (found["img_size"], found["img_size"])
    classes = found.get("classes")
    num_classes = getattr(model, "num_classes", hparams.get("num_classes"))
    if classes is not None and num_classes is not None and len(classes) != num_classes:
        found.pop("classes")  # a head replaced for fine-tuning: the data's names no longer index the outputs
    found = {key: tuple(map(str, value)) if key == "classes" else value for key, value in found.items()}
    return Preprocessing.from_dict(found)


def collect_images(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Files named in ``paths``, and image files (by ending, see :data:`IMAGE_EXTENSIONS`) under the folders among
    them, recursively and sorted.

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


class _TorchBackend:
    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x)


class _OnnxBackend:
    def __init__(self, path: str) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: the dynamo exporter's files draw harmless warnings
        # As many threads as torch uses (OMP_NUM_THREADS), not one per core: onnxruntime's default spins them all.
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        (output, *_) = self.session.run(None, {self.input.name: x.numpy()})
        return torch.from_numpy(output)


def _task_name(model: torch.nn.Module) -> str:
    """The name of the task base a model derives from (``ImageClassifier``, ``LanguageModel``, ...)."""
    import zoo.tasks

    bases = {getattr(zoo.tasks, name) for name in zoo.tasks.__all__ if isinstance(getattr(zoo.tasks, name), type)}
    return next((cls.__name__ for cls in type(model).__mro__ if cls in bases), type(model).__name__)


def _describe_shape(shape: Sequence[int | None]) -> str:
    """``(B, 1, 8, 8)``: free dimensions by their usual letters."""
    names = "BCHW" if len(shape) == 4 else "BTF"
    free = [names[i] if i < len(names) else f"d{i}" for i in range(len(shape))]
    return "(" + ", ".join(str(dim) if dim is not None else free[i] for i, dim in enumerate(shape)) + ")"


class Predictor:
    """Top-k predictions of a zoo model from a checkpoint (:meth:`from_checkpoint`) or an ONNX file
    (:meth:`from_onnx`); :meth:`load` picks by the file.

    Args:
        backend: maps an input batch to the model's outputs (logits).
        model_name: the model's class name.
        task: the task base's class name.
        input_shape: the input's shape, ``None`` for free dimensions (the batch first).
        input_dtype: ``"float32"`` or ``"int64"``.
        preprocessing: how images or text become inputs.
        source: the file the model came from.
        model: the zoo model itself for a checkpoint (text generation uses its methods); ``None`` for ONNX.
        block_size: the longest token sequence a sequence model reads.
        vocab_size: the number of token ids of a model that reads them.
    """

    #: The most pixels of one image that :meth:`load_image` decodes (PIL's own bomb check comes later).
    max_pixels: int = 4096 * 4096

    def __init__(
        self,
        backend: Any,
        model_name: str,
        task: str,
        input_shape: Sequence[int | None],
        input_dtype: str,
        preprocessing: Preprocessing,
        source: str,
        model: torch.nn.Module | None = None,
        block_size: int | None = None,
        vocab_size: int | None = None,
    ) -> None:
        self.backend, self.model_name, self.task = backend, model_name, task
        self.vocab_size = vocab_size or (len(preprocessing.vocab) if preprocessing.vocab else None)
        self.input_shape, self.input_dtype = list(input_shape), input_dtype
        self.preprocessing, self.source, self.model, self.block_size = preprocessing, source, model, block_size
        pre = preprocessing
        self._mean = torch.tensor(pre.mean).view(1, -1, 1, 1) if pre.mean is not None else None
        self._std = torch.tensor(pre.std).view(1, -1, 1, 1) if pre.std is not None else None

    # --- construction ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Predictor:
        """A predictor over an ONNX file (ending ``.onnx``) or else a checkpoint."""
        return cls.from_onnx(path) if str(path).lower().endswith(".onnx") else cls.from_checkpoint(path)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str]) -> Predictor:
        """A predictor over the zoo model of a checkpoint (read safely by :func:`zoo.load_from_checkpoint`)."""
        from zoo.checkpoint import load_from_checkpoint

        model = load_from_checkpoint(path)
        predictor = cls.from_model(model, checkpoint_preprocessing(path, model), str(path))
        if predictor.kind == "image" and predictor.preprocessing.mean is None:
            warnings.warn(
                f"{path} names no datamodule (it was not written by a recipe): images are scaled to [0, 1] but not "
                "normalized, which is right only if the model was trained so",
                stacklevel=2,
            )
        return predictor

    @classmethod
    def from_model(
        cls, model: torch.nn.Module, preprocessing: Preprocessing | None = None, source: str = "memory"
    ) -> Predictor:
        """A predictor over a zoo model in memory (put in eval mode); ``preprocessing`` defaults to the model's own
        sizes and vocabulary, without normalization."""
        from zoo.tasks import ImageClassifier

        if preprocessing is None:
            sizes = {key: getattr(model, key, None) for key in ("in_channels", "img_size", "vocab")}
            preprocessing = Preprocessing.from_dict({key: value for key, value in sizes.items() if value})
        example = model.example_input_array
        if isinstance(model, ImageClassifier):
            shape = [None, model.in_channels, *model.img_size]  # the trained size, even where pooling takes others
        elif _task_name(model) in TEXT_TASKS:
            shape = [None, None]
        else:
            shape = [None, *example.shape[1:]] if isinstance(example, torch.Tensor) else []
        dtype = str(example.dtype).removeprefix("torch.") if isinstance(example, torch.Tensor) else "float32"
        return cls(
            _TorchBackend(model),
            type(model).__name__,
            _task_name(model),
            shape,
            dtype,
            preprocessing,
            source,
            model=model,
            block_size=getattr(model, "block_size", None),
            vocab_size=getattr(model, "vocab_size", None),
        )

    @classmethod
    def from_onnx(cls, path: str | os.PathLike[str]) -> Predictor:
        """A predictor over an ONNX file run by onnxruntime, described by its ``zoo.*`` metadata.

        Raises:
            FileNotFoundError: when ``path`` is not a file.
            ValueError: naming ``path`` when onnxruntime cannot read it, its metadata is not JSON, or the model has
                several inputs.
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such ONNX file")
        try:
            backend = _OnnxBackend(str(path))
        except Exception as error:  # onnxruntime raises its own exception types for unreadable files
            raise ValueError(f"{path} is not a readable ONNX model ({type(error).__name__}: {error})") from error
        meta = backend.session.get_modelmeta().custom_metadata_map

        def read_json(key: str, default: Any) -> Any:
            text = meta.get(METADATA_KEYS[key])
            if text is None:
                return default
            try:
                return json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: metadata {METADATA_KEYS[key]} is not JSON ({error})") from error

        hparams = read_json("hyper_parameters", {})
        graph_shape = [dim if isinstance(dim, int) else None for dim in backend.input.shape]
        shape = read_json("input_shape", graph_shape)
        if isinstance(shape, list) and len(shape) == len(graph_shape):
            # The graph knows which axes it exported as dynamic (a language model's time axis beside the batch).
            shape = [None if graph is None else dim for dim, graph in zip(shape, graph_shape, strict=True)]
        dtype = meta.get(METADATA_KEYS["input_dtype"]) or ("int64" if "int64" in backend.input.type else "float32")
        if len(backend.session.get_inputs()) != 1 or dtype.startswith("["):
            raise ValueError(f"{path} has several inputs; a predictor feeds models of one input only")
        class_path = meta.get(METADATA_KEYS["class_path"]) or hparams.get("_class_path") or "unknown"
        task = meta.get(METADATA_KEYS["task"]) or class_path.rpartition(".")[2]
        values = read_json("preprocess", {})
        for key in ("in_channels", "img_size", "vocab"):
            if values.get(key) is None and hparams.get(key):
                values[key] = hparams[key]
        if task == "ImageClassifier" and values.get("in_channels") is None and len(shape) == 4:
            values["in_channels"] = shape[1]
        if isinstance(values.get("img_size"), int):
            values["img_size"] = [values["img_size"]] * 2
        return cls(
            backend,
            class_path.rpartition(".")[2],
            task,
            shape,
            dtype,
            Preprocessing.from_dict(values),
            str(path),
            block_size=hparams.get("block_size"),
            vocab_size=hparams.get("vocab_size"),
        )

    # --- what the model reads ----------------------------------------------------------------------------
    @property
    def kind(self) -> InputKind:
        """``"image"`` for image classifiers, ``"text"`` for models with a vocabulary, else ``"tensor"``."""
        if self.task in TEXT_TASKS and self.preprocessing.vocab:
            return "text"
        if self.task == "ImageClassifier" and self.preprocessing.in_channels in (1, 3):
            return "image"
        return "tensor"

    @property
    def classes(self) -> list[str] | None:
        """Class names by index, when the data gave them."""
        return list(self.preprocessing.classes) if self.preprocessing.classes else None

    def metadata(self) -> dict[str, Any]:
        """The model, its classes and what it reads, as JSON-ready values."""
        return {
            "model": self.model_name,
            "task": self.task,
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
        want_int = self.input_dtype == "int64"
        if x.dtype == torch.bool or x.is_complex() or (want_int and x.is_floating_point()):
            raise InputError(f"{self.model_name} expects inputs of shape {expected}, got dtype {x.dtype}")
        shape_ok = x.ndim == len(self.input_shape) and all(
            want is None or want == got for want, got in zip(self.input_shape, x.shape, strict=True)
        )
        if not shape_ok or 0 in x.shape:
            raise InputError(
                f"{self.model_name} expects inputs of shape {expected}, got shape {tuple(x.shape)} "
                "(the batch dimension first)"
            )
        if want_int and self.vocab_size:
            low, high = int(x.min()), int(x.max())
            if low < 0 or high >= self.vocab_size:
                raise InputError(
                    f"{self.model_name} reads token ids in [0, {self.vocab_size - 1}], got values in [{low}, {high}]"
                )
        if self.task in TEXT_TASKS and self.block_size and x.shape[1] > self.block_size:
            raise InputError(f"{self.model_name} reads at most block_size={self.block_size} tokens, got {x.shape[1]}")
        return x.long() if want_int else x.float()

    def load_image(self, source: str | os.PathLike[str] | bytes, name: str | None = None) -> torch.Tensor:
        """One image file (or its encoded bytes) as the model's input ``(C, H, W)``, preprocessed.

        Raises:
            InputError: naming the file when it is no image (status 415), larger than :attr:`max_pixels` (413),
                or of a mode with no single conversion to the model's channels (16-bit, float, CMYK, ...; 422).
        """
        pre = self.preprocessing
        label = name or (str(source) if not isinstance(source, bytes) else "the upload")
        if self.kind != "image":
            raise InputError(f"{self.model_name} ({self.task}) does not read images; it reads {self.input_spec()}")
        try:
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                width, height = image.size
                if width * height > self.max_pixels:  # before decoding: a small file may hold a huge image
                    raise InputError(
                        f"{label}: {width}x{height} pixels is more than the {self.max_pixels} this predictor "
                        "decodes; downscale it first",
                        status=413,
                    )
                image.load()
                if image.mode not in IMAGE_MODES:
                    raise InputError(
                        f"{label}: image mode {image.mode!r} is not read; {self.model_name} takes 8-bit "
                        f"{'grayscale' if pre.in_channels == 1 else 'RGB'} images (modes {', '.join(IMAGE_MODES)}): "
                        "convert it first"
                    )
                pixels = torch.from_numpy(_array(image.convert("L" if pre.in_channels == 1 else "RGB")))
        except InputError:
            raise
        except Image.DecompressionBombError as error:
            raise InputError(f"{label}: {error}", status=413) from error
        except (OSError, ValueError, SyntaxError) as error:  # PIL: UnidentifiedImageError, truncated files
            raise InputError(f"{label}: cannot read it as an image ({error})", status=415) from error
        pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)  # (H, W, C) -> (C, H, W)
        if pre.img_size is not None and tuple(pixels.shape[1:]) != tuple(pre.img_size):
            from torchvision.transforms.v2.functional import resize

            pixels = resize(pixels, list(pre.img_size), antialias=True)
        return self.normalize(pixels.unsqueeze(0))[0]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images ``(B, C, H, W)`` -> float32 in [0, 1], then normalized with the data's mean and std."""
        x = images.float().div_(255)
        return x if self._mean is None else (x - self._mean) / self._std

    def input_spec(self) -> str:
        """What the model reads, in words."""
        if self.kind == "text":
            return f"text in a vocabulary of {len(self.preprocessing.vocab)} characters"
        return f"tensors of shape {_describe_shape(self.input_shape)} {self.input_dtype}"

    # --- predictions -------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's outputs for a batch (checked by :meth:`check_tensor`).

        Raises:
            InputError: for input the checks or the model's own ``check_input`` refuse.
        """
        if self.task == "Seq2SeqTask":
            raise InputError(f'{self.model_name} answers text: send {{"text": "..."}}')
        x = self.check_tensor(x)
        try:
            return self.backend(x)
        except ValueError as error:  # the zoo models' input checks name what they expect
            raise InputError(str(error)) from error

    def predict_tensor(self, x: torch.Tensor, top_k: int = 5, names: Sequence[str] | None = None) -> list[dict]:
        """One result per sample: top-k classes for a classifier's logits ``(B, num_classes)``, else the outputs."""
        outputs = self.forward(x)
        names = list(names) if names is not None else [str(index) for index in range(len(outputs))]
        if outputs.ndim != 2 or "Classifier" not in self.task:
            return [{"input": name, "outputs": output.tolist()} for name, output in zip(names, outputs, strict=True)]
        probabilities = outputs.float().softmax(-1)
        k = max(1, min(top_k, probabilities.shape[1]))
        values, indices = probabilities.topk(k, dim=1)
        classes = self.classes
        results = []
        for name, row_values, row_indices in zip(names, values.tolist(), indices.tolist(), strict=True):
            top = [
                {"index": index, "class": classes[index] if classes else None, "probability": value}
                for index, value in zip(row_indices, row_values, strict=True)
            ]
            results.append({"input": name, **top[0], "top_k": top})
        return results

    def predict_images(
        self,
        sources: Sequence[str | os.PathLike[str] | bytes],
        top_k: int = 5,
        names: Sequence[str] | None = None,
        batch_size: int = 64,
    ) -> list[dict]:
        """Top-k classes of image files (or encoded bytes), ``batch_size`` images per forward."""
        names = list(names) if names is not None else [str(source) for source in sources]
        results: list[dict] = []
        for start in range(0, len(sources), batch_size):
            chunk = range(start, min(start + batch_size, len(sources)))
            batch = torch.stack([self.load_image(sources[i], names[i]) for i in chunk])
            results += self.predict_tensor(batch, top_k, [names[i] for i in chunk])
        return results

    def generate(
        self,
        text: str,
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = None,
        seed: int = 0,
    ) -> dict[str, Any]:
        """A language model's continuation of ``text`` (or a sequence-to-sequence model's answer to it).

        Raises:
            InputError: naming the characters outside the vocabulary, or when the model reads no text.
        """
        if self.kind != "text":
            raise InputError(f"{self.model_name} ({self.task}) does not read text; it reads {self.input_spec()}")
        if not text:
            raise InputError("the text is empty: give at least one character")
        vocab = self.preprocessing.vocab
        unknown = sorted(set(text) - set(vocab))
        if unknown:
            raise InputError(f"characters {unknown} are not in the model's vocabulary of {len(vocab)}: {vocab!r}")
        if max_new_tokens < 0 or temperature < 0 or (top_k is not None and top_k < 1):
            raise InputError("need max_new_tokens >= 0, temperature >= 0 and top_k >= 1 (or none)")
        generator = torch.Generator().manual_seed(seed)
        if self.task == "Seq2SeqTask" and self.model is None:
            raise InputError("sequence-to-sequence models answer from a checkpoint only (not ONNX)")
        try:
            if self.task == "Seq2SeqTask":
                answer = self.model.generate(text)
                return {"input": text, "output": answer, "continuation": answer}
            if self.model is not None:
                output = self.model.generate(text, max_new_tokens, temperature, top_k, generator)
            else:
                output = self._onnx_generate(text, max_new_tokens, temperature, top_k, generator)
        except ValueError as error:  # the models' own checks (a source longer than max_length, ...)
            raise InputError(str(error)) from error
        return {"input": text, "output": output, "continuation": output[len(text) :]}

    def _onnx_generate(
        self, text: str, max_new_tokens: int, temperature: float, top_k: int | None, generator: torch.Generator
    ) -> str:
        """The sampling loop of :meth:`zoo.tasks.LanguageModel.generate`, rereading the last ``block_size`` tokens
        at every step (an ONNX graph keeps no cache)."""
        vocab = self.preprocessing.vocab
        lookup = {char: index for index, char in enumerate(vocab)}
        ids = torch.tensor([[lookup[char] for char in text]], dtype=torch.long)  # (1, T)
        window = self.block_size or ids.shape[1] + max_new_tokens
        for _ in range(max_new_tokens):
            logits = self.forward(ids[:, -window:])[:, -1].float()  # (1, V)
            if temperature == 0:
                token = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.shape[-1]:
                    kth = logits.topk(top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                token = torch.multinomial(logits.softmax(-1), 1, generator=generator)
            ids = torch.cat([ids, token], dim=1)
        return "".join(vocab[index] for index in ids[0].tolist())


def _array(image: Image.Image) -> Any:
    import numpy as np

    return np.array(image, dtype=np.uint8, copy=True)


__all__ = [
    "IMAGE_EXTENSIONS",
    "METADATA_KEYS",
    "InputError",
    "Predictor",
    "Preprocessing",
    "checkpoint_preprocessing",
    "collect_images",
    "datamodule_preprocessing",
]
