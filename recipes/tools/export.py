"""``zoo export``: a zoo model to ONNX or a ``torch.export`` program (``.pt2``), checked against eager PyTorch.

zoo export --ckpt_path logs/digits_cnn/version_0/checkpoints/last.ckpt --output digits_cnn.onnx
zoo export --ckpt_path last.ckpt --format pt2 --output digits_cnn.pt2
zoo export --model cnn_digits --output cnn_digits.onnx          # a preset with fresh weights (format from the suffix)

:func:`export_model` writes what the tools run (:class:`~recipes.tools.inference.InferenceModel`): the training
data's normalization, then the task's ``predict_tensors``, so an exported file answers what ``zoo predict`` and
``zoo serve`` answer from the checkpoint (class probabilities, forecasts in original units, denoised images, ...);
its metadata also holds the data's preprocessing (``zoo.preprocessing``) and the output names (``zoo.outputs``).
:func:`export_onnx` and :func:`export_program` export any module.

A file that loads is no proof of a correct graph (the dynamo ONNX exporter has shipped graphs that score 0%), so
every export runs the written file on the example and on random inputs of another batch size (and, for token ids,
another length when that axis is dynamic), and raises :class:`ParityError` when the largest absolute difference
to the eager model is above ``atol + rtol * max|eager output|`` (``1e-4`` absolute for fp32, plus ``1e-5`` of
the output scale: a randomly initialized ResNet-34 at 224x224 has logits near 4000, where float rounding alone
differs by 2e-3). The file is written to its destination only after it passed.

Both formats carry the same metadata, read back by :func:`read_metadata`: ``zoo.class_path``,
``zoo.hyper_parameters`` (JSON), ``zoo.input_shape`` (JSON, the batch axis ``null``), ``zoo.input_dtype`` and
``zoo.task``; in ONNX as ``metadata_props``, in a ``.pt2`` as the extra file ``zoo_metadata.json``. A multi-input
model (seq2seq: ``src, src_lengths, tgt_in``) stores a JSON list of shapes and a JSON list of dtype names.

>>> import tempfile, zoo
>>> path = export_model(zoo.create_model("mlp_small"), tempfile.mkdtemp() + "/mlp.pt2")
>>> read_metadata(path)["zoo.input_shape"], read_metadata(path)["zoo.outputs"]  # uint8 images in, probabilities out
('[null, 1, 28, 28]', '["probabilities"]')
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.export import Dim

from recipes.tools.inference import InferenceModel, resolve_preprocessing

#: The extra file of a ``.pt2`` that holds the metadata.
METADATA_FILE = "zoo_metadata.json"
METADATA_KEYS = ("zoo.class_path", "zoo.hyper_parameters", "zoo.input_shape", "zoo.input_dtype", "zoo.task")
#: What :func:`export_model` adds: the data's preprocessing and the names of the outputs (JSON).
MODEL_METADATA_KEYS = ("zoo.preprocessing", "zoo.outputs")
FORMATS = ("onnx", "pt2")
#: Default tolerance of :func:`check_parity` for fp32 models (max absolute difference).
DEFAULT_ATOL = 1e-4
#: Default relative part of the tolerance, times the largest absolute eager output.
DEFAULT_RTOL = 1e-5
INSTALL_HINT = 'pip install "lightning-zoo[export]"'


class ParityError(ValueError):
    """An exported graph whose outputs differ from the eager model's by more than the tolerance."""


# --- inputs ------------------------------------------------------------------------------------------------------


def example_inputs(model: nn.Module, example: Any = None) -> tuple[torch.Tensor, ...]:
    """``example`` (default: ``model.example_input_array``) as a tuple of positional inputs."""
    example = getattr(model, "example_input_array", None) if example is None else example
    if example is None:
        raise ValueError(f"{type(model).__name__} has no example_input_array: pass an example input")
    inputs = tuple(example) if isinstance(example, (tuple, list)) else (example,)
    if not all(isinstance(x, torch.Tensor) for x in inputs):
        raise TypeError(f"the example must be a tensor or a tuple of tensors, got {[type(x).__name__ for x in inputs]}")
    return inputs


def _is_lengths(inputs: Sequence[torch.Tensor], index: int) -> bool:
    """Whether input ``index`` of a multi-input example holds sequence lengths (1-D integers after a sequence)."""
    x = inputs[index]
    return index > 0 and x.ndim == 1 and not x.is_floating_point() and inputs[0].ndim >= 2


def random_inputs(
    model: nn.Module,
    example: Any = None,
    batch_size: int = 3,
    steps: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """Random inputs shaped like the example with another batch size (and, for token ids, ``steps`` steps):
    normal floats, token ids below the model's ``vocab_size``, full-length ``lengths``."""
    inputs = example_inputs(model, example)
    generator = torch.Generator().manual_seed(seed)
    vocab = int(getattr(model, "vocab_size", 0) or 0)
    out: list[torch.Tensor] = []
    for index, x in enumerate(inputs):
        shape = [batch_size, *x.shape[1:]]
        if steps is not None and x.ndim == 2 and not x.is_floating_point():
            shape[1] = steps  # token ids (B, T)
        if _is_lengths(inputs, index):
            out.append(torch.full((batch_size,), out[0].shape[1], dtype=x.dtype))
        elif x.is_floating_point():
            out.append(torch.randn(shape, generator=generator, dtype=x.dtype))
        else:
            high = vocab if vocab > 0 else int(x.max()) + 1
            out.append(torch.randint(0, max(high, 1), shape, generator=generator, dtype=x.dtype))
    return tuple(out)


def _dynamic_shapes(inputs: Sequence[torch.Tensor], batch: bool, steps: bool) -> tuple[dict[int, Any], ...]:
    """Dynamic axes per input: the batch (axis 0), and the time axis of token ids ``(B, T)`` when ``steps``."""
    shapes = []
    for x in inputs:
        axes: dict[int, Any] = {}
        if batch:
            axes[0] = Dim.DYNAMIC
        if steps and x.ndim == 2 and not x.is_floating_point():
            axes[1] = Dim.DYNAMIC
        shapes.append(axes)
    return tuple(shapes)


def _has_tokens(inputs: Sequence[torch.Tensor]) -> bool:
    return any(x.ndim == 2 and not x.is_floating_point() for x in inputs)


# --- metadata ----------------------------------------------------------------------------------------------------


def model_metadata(model: nn.Module, example: Any = None) -> dict[str, str]:
    """The metadata both formats carry (see the module docstring); values are strings. For an
    :class:`~recipes.tools.inference.InferenceModel` they describe the zoo model inside it, with its preprocessing
    and output names."""
    inputs = example_inputs(model, example)
    shapes = [[None, *x.shape[1:]] for x in inputs]
    dtypes = [str(x.dtype).removeprefix("torch.") for x in inputs]
    extra = {}
    if isinstance(model, InferenceModel):
        extra = {
            "zoo.preprocessing": json.dumps(model.preprocessing.to_dict(), sort_keys=True),
            "zoo.outputs": json.dumps(list(model.output_names)),
        }
        model = model.model
    hparams = dict(getattr(model, "hparams", {}))
    task = next((cls.__name__ for cls in type(model).__mro__ if cls.__module__.startswith("zoo.tasks.")), "")
    return {
        "zoo.class_path": f"{type(model).__module__}.{type(model).__qualname__}",
        "zoo.hyper_parameters": json.dumps(hparams, sort_keys=True, default=str),
        "zoo.input_shape": json.dumps(shapes[0] if len(inputs) == 1 else shapes),
        "zoo.input_dtype": dtypes[0] if len(inputs) == 1 else json.dumps(dtypes),
        "zoo.task": task or type(model).__name__,
        **extra,
    }


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``zoo.*`` metadata of an ``.onnx`` or ``.pt2`` file written by this module."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such exported model file")
    if not _is_program(path):
        onnx = _require("onnx")
        proto = onnx.load(str(path), load_external_data=False)
        return {prop.key: prop.value for prop in proto.metadata_props if prop.key.startswith("zoo.")}
    extra = {METADATA_FILE: ""}
    _load_pt2(path, extra_files=extra)
    if not extra[METADATA_FILE]:
        raise ValueError(f"{path} has no {METADATA_FILE}: it was not written by zoo export")
    return json.loads(extra[METADATA_FILE])


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a file written by :func:`export_model`, parsed: ``class_path``, ``hyper_parameters``,
    ``preprocessing``, ``outputs``, ``input_shape``, ``input_dtype``.

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        ValueError: naming ``path`` and the entry when the file is unreadable, or an entry is missing or not JSON.
    """
    try:
        raw = read_metadata(path)
    except FileNotFoundError:
        raise
    except Exception as error:  # onnx raises its own types for files that are no ONNX model
        raise ValueError(f"{path} is not a readable exported model ({type(error).__name__}: {error})") from error
    keys = {"class_path": False, "hyper_parameters": True, "preprocessing": True, "outputs": True}
    keys.update(input_shape=True, input_dtype=False)
    parsed: dict[str, Any] = {}
    for key, is_json in keys.items():
        text = raw.get(f"zoo.{key}")
        if text is None:
            raise ValueError(
                f"{path} has no zoo.{key} metadata: it was not written by `zoo export` (or by an older version); "
                "export it again"
            )
        try:
            parsed[key] = json.loads(text) if is_json else text
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: metadata zoo.{key} is not JSON ({error})") from error
    return parsed


# --- export --------------------------------------------------------------------------------------------------------


def export_program(
    model: nn.Module,
    path: str | os.PathLike[str],
    example: Any = None,
    dynamic_batch: bool = True,
    dynamic_steps: bool | None = None,
    check: bool = True,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model`` as a ``torch.export`` program (``torch.export.save``) with the zoo metadata.

    Args:
        model: any module; exported in eval mode (its mode is restored afterwards).
        path: the ``.pt2`` file to write.
        example: the example input(s); default ``model.example_input_array``.
        dynamic_batch: export the batch axis as dynamic.
        dynamic_steps: the time axis of token ids ``(B, T)`` dynamic too; ``None``: when it exports, else fixed.
        check: run :func:`check_parity` on the example and on random inputs of another batch size.
        atol: the absolute part of the tolerance on the max abs difference to eager.
        rtol: the relative part, times the largest absolute eager output.
        extra_metadata: more string entries beside the ``zoo.*`` ones.

    Raises:
        ParityError: when the program's outputs differ from eager by more than the tolerance (nothing is written).
    """
    inputs = example_inputs(model, example)
    metadata = json.dumps({**model_metadata(model, inputs), **(extra_metadata or {})})
    with _eval(model):
        program, steps = _export(model, inputs, dynamic_batch, dynamic_steps)

        def write(tmp: str) -> None:
            torch.export.save(program, tmp, extra_files={METADATA_FILE: metadata})

        return _write_checked(model, Path(path), write, inputs, dynamic_batch, steps, check, (atol, rtol))


def export_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    data: Mapping[str, Any] | None = None,
    fmt: str | None = None,
    **options: Any,
) -> Path:
    """Write what the tools run for a zoo model: its :class:`~recipes.tools.inference.InferenceModel` (the data's
    normalization, then ``predict_tensors``), with the data's preprocessing and the output names in the metadata.

    Args:
        model: a zoo model (a :class:`~zoo.tasks.TaskModule`).
        path: the file to write; its suffix picks the format unless ``fmt`` is given.
        data: the data's preprocessing (``zoo.checkpoint.data_preprocessing`` of a checkpoint); none for a preset.
        fmt: ``"onnx"`` or ``"pt2"``.
        **options: as :func:`export_onnx` / :func:`export_program` (``dynamic_batch``, ``atol``, ...).
    """
    fmt = fmt or (Path(path).suffix.lstrip(".") if Path(path).suffix.lstrip(".") in FORMATS else "onnx")
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    module = InferenceModel(model, resolve_preprocessing(model, data))
    return (export_onnx if fmt == "onnx" else export_program)(module, path, **options)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    example: Any = None,
    dynamic_batch: bool = True,
    dynamic_steps: bool | None = None,
    check: bool = True,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    extra_metadata: Mapping[str, str] | None = None,
    opset_version: int | None = None,
) -> Path:
    """Write ``model`` as ONNX through the dynamo exporter (``torch.onnx.export(..., dynamo=True)``) with the zoo
    metadata in ``metadata_props``; arguments as :func:`export_program`.

    Raises:
        ImportError: when onnxscript or onnx is missing, with the install command.
        ParityError: when onnxruntime's outputs differ from eager by more than the tolerance (nothing is written).
    """
    _require("onnxscript")
    _require("onnx")
    inputs = example_inputs(model, example)
    names = _input_names(model, len(inputs))
    with _eval(model):
        program, steps = _export(model, inputs, dynamic_batch, dynamic_steps)
        output_names = list(getattr(model, "output_names", ())) or None
        onnx_program = torch.onnx.export(
            program,
            inputs,
            dynamo=True,
            input_names=names,
            output_names=output_names,
            opset_version=opset_version,
            verbose=False,
        )
        for key, value in {**model_metadata(model, inputs), **(extra_metadata or {})}.items():
            onnx_program.model.metadata_props[key] = value
        return _write_checked(
            model, Path(path), lambda tmp: onnx_program.save(tmp), inputs, dynamic_batch, steps, check, (atol, rtol)
        )


def _export(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], batch: bool, steps: bool | None
) -> tuple[torch.export.ExportedProgram, bool]:
    """``torch.export.export`` with the dynamic axes asked for; ``steps=None`` tries a dynamic time axis first."""
    # torch.export unrolls recurrent layers over the example's steps, so their time axis is fixed: not tried.
    recurrent = any(isinstance(module, nn.RNNBase) for module in model.modules())
    want_steps = (_has_tokens(inputs) and not recurrent) if steps is None else steps
    if want_steps:
        try:
            return torch.export.export(model, inputs, dynamic_shapes=_dynamic_shapes(inputs, batch, True)), True
        except Exception:
            if steps:
                raise
    return torch.export.export(model, inputs, dynamic_shapes=_dynamic_shapes(inputs, batch, False)), False


def _write_checked(
    model: nn.Module,
    path: Path,
    write: Callable[[str], None],
    inputs: tuple[torch.Tensor, ...],
    batch: bool,
    steps: bool,
    check: bool,
    tolerance: tuple[float, float],
) -> Path:
    """Write to a temporary folder, check parity there, then move the file (and any external data) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zoo_export_", dir=path.parent) as folder:
        tmp = Path(folder) / path.name
        write(str(tmp))
        if check:
            checks = [inputs]
            if batch:
                # one step shorter: the example is often the longest sequence a model takes
                length = inputs[0].shape[1] - 1 if steps and inputs[0].ndim == 2 and inputs[0].shape[1] > 1 else None
                checks.append(random_inputs(model, inputs, batch_size=inputs[0].shape[0] + 1, steps=length))
            for checked in checks:
                diff = check_parity(model, tmp, checked)
                with _eval(model), torch.no_grad():
                    scale = max((out.abs().max().item() for out in _flatten(model(*checked)) if out.numel()), default=0)
                limit = tolerance[0] + tolerance[1] * scale
                if not diff <= limit:  # NaN fails too
                    shapes = [tuple(x.shape) for x in checked]
                    raise ParityError(
                        f"{type(model).__name__} exported to {tmp.suffix} differs from eager by {diff:.3g} "
                        f"(tolerance {limit:.3g}: atol {tolerance[0]:g} + rtol {tolerance[1]:g} x max |output| "
                        f"{scale:.3g}) on inputs of shapes {shapes}; nothing was written to {path}"
                    )
        for item in Path(folder).iterdir():  # ONNX external data sits beside the model
            shutil.move(str(item), str(path.parent / item.name))
    return path


def failure_reason(error: BaseException) -> str:
    """One line for an exporter's exception: its type, first line and the model code it points at."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    where = [line for line in lines if line.startswith("File ") and "/torch/" not in line]
    reason = f"{type(error).__name__}: {lines[0] if lines else ''}"
    return f"{reason} at {where[-1]}" if where else reason


# --- running exported files ----------------------------------------------------------------------------------------


def load_program(path: str | os.PathLike[str]) -> torch.export.ExportedProgram:
    """The ``torch.export`` program saved in a ``.pt2`` file; call ``load_program(path).module()(x)``."""
    return _load_pt2(Path(path))


def check_parity(model: nn.Module, path: str | os.PathLike[str], inputs: Any) -> float:
    """Max absolute difference between the eager model (eval mode) and the exported file on ``inputs``.

    ONNX files run in onnxruntime (CPU), ``.pt2`` archives as a ``torch.export`` program.
    """
    inputs = example_inputs(model, inputs)
    with _eval(model), torch.no_grad():
        expected = _flatten(model(*inputs))
        actual = _run_file(model, Path(path), inputs)
    if len(expected) != len(actual):
        raise ParityError(f"{path} returns {len(actual)} outputs, the eager model {len(expected)}")
    diff = 0.0
    for want, got in zip(expected, actual, strict=True):
        got = torch.as_tensor(got)
        if tuple(got.shape) != tuple(want.shape):
            raise ParityError(f"{path} returns shape {tuple(got.shape)} where eager returns {tuple(want.shape)}")
        diff = max(diff, _max_abs_diff(got, want))
    return diff


def _max_abs_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    """Max abs difference; a NaN or inf on one side only counts as ``inf`` (``max`` would skip a NaN)."""
    if not want.numel():
        return 0.0
    got, want = got.double(), want.double()
    same = (got == want) | (got.isnan() & want.isnan())  # equal infinities and NaN on both sides agree
    diff = (got - want).abs().masked_fill(same, 0.0)
    return float("inf") if diff.isnan().any() else diff.max().item()


def _run_file(model: nn.Module, path: Path, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    if not _is_program(path):
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: the dynamo exporter's files draw harmless warnings
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        wanted = {arg.name for arg in session.get_inputs()}  # an input the graph never reads is dropped from it
        names = _input_names(model, len(inputs))
        feeds = {name: x.numpy() for name, x in zip(names, inputs, strict=True) if name in wanted}
        return [torch.from_numpy(out) for out in session.run(None, feeds)]
    return _flatten(load_program(path).module()(*inputs))


def _flatten(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _flatten(item)]
    if isinstance(output, dict):
        return [t for key in sorted(output) for t in _flatten(output[key])]
    raise TypeError(f"cannot compare an output of type {type(output).__name__}")


def _input_names(model: nn.Module, count: int) -> list[str]:
    params = [
        p.name
        for p in inspect.signature(model.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return params[:count] if len(params) >= count else [f"input_{i}" for i in range(count)]


def _is_program(path: Path) -> bool:
    """A ``.pt2`` file by its name, else by its content (a ``.pt2`` is a zip archive, an ONNX file a protobuf)."""
    return path.suffix == ".pt2" or (path.suffix != ".onnx" and zipfile.is_zipfile(path))


def _load_pt2(path: Path, extra_files: dict[str, Any] | None = None) -> torch.export.ExportedProgram:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such exported program file")
    try:
        return torch.export.load(str(path), extra_files=extra_files)
    except Exception as error:
        raise ValueError(f"{path} is not a readable torch.export program ({type(error).__name__}: {error})") from error


def _require(name: str) -> Any:
    """The ONNX package ``name`` (``onnx``, ``onnxscript`` or ``onnxruntime``), or an ImportError naming the extra."""
    try:
        if name == "onnx":
            import onnx as module
        elif name == "onnxscript":
            import onnxscript as module
        else:
            import onnxruntime as module
    except ImportError as error:
        raise ImportError(f"{name} is needed to export and check ONNX files: {INSTALL_HINT}") from error
    return module


class _eval:
    """Eval mode for the block, then the module's previous mode."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.training = model, model.training

    def __enter__(self) -> nn.Module:
        return self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.training)


# --- the command ---------------------------------------------------------------------------------------------------


def main(args: Sequence[str] | None = None) -> Path:
    """``zoo export``: write the file, print its parity and size, return its path.

    The written file runs on the model's example input and on random inputs of another batch size; the largest
    absolute difference to the eager model is printed, and above ``--atol`` + ``--rtol`` x the largest absolute
    output, nothing is written and the command fails.

    Raises:
        SystemExit: with a message naming the file, preset or package at fault.
    """
    from recipes.tools.command import check_output_file, exactly_one, parse, tool_parser
    from zoo import create_model
    from zoo.checkpoint import data_preprocessing, model_from_checkpoint, read_checkpoint

    parser = tool_parser("export", __doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=str | None, default=None, help="a checkpoint of a zoo model")
    parser.add_argument("--model", type=str | None, default=None, help="a registered preset, with fresh weights")
    parser.add_argument("--format", type=str | None, default=None, help="onnx or pt2 (default: the --output suffix)")
    parser.add_argument("--output", type=str | None, default=None, help="the file (default: <name>.<format>)")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="absolute tolerance on the max abs diff")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help="relative part, times the max |output|")
    parser.add_argument("--static_batch", type=bool, default=False, help="a fixed batch size (the example's)")
    parser.add_argument("--overwrite", type=bool, default=False, help="replace --output when it exists")
    opts = parse(parser, args)
    source = exactly_one(parser, opts, "ckpt_path", "model")
    if not (opts.atol > 0 and opts.rtol >= 0):
        parser.error(f"--atol must be > 0 and --rtol >= 0, got {opts.atol} and {opts.rtol}")
    suffix = Path(opts.output).suffix.lstrip(".").lower() if opts.output else None
    fmt = opts.format or suffix or "onnx"
    if fmt not in FORMATS or suffix not in (None, fmt):
        parser.error(f"--format must be onnx or pt2 and --output end in it, got {fmt!r} and {opts.output!r}")
    name = Path(opts.ckpt_path).stem if source == "ckpt_path" else opts.model
    output = check_output_file(opts.output or f"{name}.{fmt}", opts.overwrite, (f".{fmt}",))
    try:
        if source == "ckpt_path":
            checkpoint = read_checkpoint(opts.ckpt_path)  # once: the model and the data's preprocessing
            model, data = model_from_checkpoint(checkpoint, opts.ckpt_path), data_preprocessing(checkpoint)
        else:
            model, data = create_model(opts.model).eval(), None
        module = InferenceModel(model, resolve_preprocessing(model, data))
        export = export_onnx if fmt == "onnx" else export_program
        path = export(module, output, dynamic_batch=not opts.static_batch, atol=opts.atol, rtol=opts.rtol)
    except ImportError as error:
        hint = "" if INSTALL_HINT in str(error) else f"; {INSTALL_HINT}"
        raise SystemExit(f"error: {error}{hint}") from None
    except (FileNotFoundError, ValueError, TypeError) as error:  # UnknownModelError and ParityError are ValueErrors
        raise SystemExit(f"error: {error}") from None
    except Exception as error:  # exporter failures come in many types: name the model and the reason
        raise SystemExit(f"error: {name} does not export to {fmt} ({failure_reason(error)})") from None
    example = module.example_input_array.shape[0]
    batch_size = example if opts.static_batch else example + 3  # another batch size than the export's
    diff = check_parity(module, path, random_inputs(module, batch_size=batch_size, seed=1))
    size = os.path.getsize(path) + sum(os.path.getsize(p) for p in external_data(path))
    print(
        f"wrote {path} ({fmt}, {size / 1e6:.3f} MB); max abs diff to eager {diff:.2e} on a random batch of "
        f"{batch_size} (tolerance {opts.atol:g} + {opts.rtol:g} x max |output|)"
    )
    return path


def external_data(path: Path) -> list[Path]:
    """ONNX external-data files written beside ``path`` (large models)."""
    data = path.with_name(path.name + ".data")
    return [data] if data.exists() else []
