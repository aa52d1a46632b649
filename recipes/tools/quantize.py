"""``zoo quantize``: int8 quantization of zoo models on the CPU through torchao (0.18 checked).

zoo quantize --ckpt_path logs/mnist_mlp/version_0/checkpoints/last.ckpt --output mnist_mlp_int8.pt
zoo quantize --ckpt_path last.ckpt --method weight_only --output model_int8.pt

Two paths, both of torchao's public API:

- :func:`quantize_linear` (weights and activations of every ``nn.Linear``, activations quantized per batch at run
  time): ``torchao.quantization.quantize_(model, Int8DynamicActivationInt8WeightConfig())``, or
  ``Int8WeightOnlyConfig()`` with ``weight_only=True``. For MLPs, transformers' projections and classifier heads.
  The result is an ``nn.Module`` whose Linear weights are torchao ``Int8Tensor`` subclasses; its state dict saves with
  ``torch.save`` and loads with ``weights_only=True`` (:func:`save_quantized`, :func:`load_quantized`).
- :func:`quantize_static` (convolutions and Linear layers with activations calibrated once on real batches): torchao's
  PT2E flow, the successor of ``torch.ao.quantization`` static quantization: ``torch.export`` ->
  ``prepare_pt2e(model, X86InductorQuantizer())`` -> calibration -> ``convert_pt2e``. The converted graph holds int8
  weights with quantize/dequantize nodes; eager execution of it is slower than float, and ``torch.compile`` (Inductor)
  fuses it into int8 kernels. Saved as a ``torch.export`` program (``.pt2``).

Not available: recurrent layers (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``). torchao 0.18 has no int8 path for them, and
the old ``torch.ao.quantization.quantize_dynamic`` that had one is deprecated; :func:`quantize` raises
:class:`UnsupportedModelError` for such models rather than quantizing only their head.

>>> import zoo
>>> model = zoo.create_model("mlp_small")
>>> quantized = quantize_linear(model)
>>> serialized_mb(quantized) < serialized_mb(model) / 3
True
"""

from __future__ import annotations

import copy
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from recipes.tools.export import example_inputs
from zoo.checkpoint import load_file

Method = Literal["auto", "dynamic", "weight_only", "static"]
INSTALL_HINT = 'pip install "lightning-zoo[quantize]"'
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class UnsupportedModelError(ValueError):
    """A model that no int8 path of torchao covers on the CPU (recurrent layers, no Linear or conv layer)."""


def _torchao() -> Any:
    try:
        import torchao.quantization
    except ImportError as error:
        raise ImportError(f"torchao is needed to quantize: {INSTALL_HINT}") from error
    return torchao.quantization


def check_supported(model: nn.Module, method: Method = "auto") -> None:
    """Raise :class:`UnsupportedModelError` naming the layer types that keep ``model`` from int8 on the CPU."""
    recurrent = sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.RNNBase)})
    if recurrent:
        raise UnsupportedModelError(
            f"{type(model).__name__} has recurrent layers ({', '.join(recurrent)}): torchao 0.18 has no int8 CPU path "
            "for them (torch.ao's quantize_dynamic, which had one, is deprecated); keep this model in float"
        )
    if method in ("dynamic", "weight_only") and not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise UnsupportedModelError(f"{type(model).__name__} has no nn.Linear layer for {method} int8 quantization")
    if method == "static" and not any(isinstance(m, (nn.Linear, *_CONV)) for m in model.modules()):
        raise UnsupportedModelError(f"{type(model).__name__} has no conv or Linear layer for static int8 quantization")


def quantize_linear(model: nn.Module, weight_only: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` with int8 ``nn.Linear`` weights (torchao ``quantize_``, see module docstring).

    Args:
        model: the float model (left unchanged).
        weight_only: ``Int8WeightOnlyConfig`` (float activations) instead of ``Int8DynamicActivationInt8WeightConfig``.
    """
    check_supported(model, "weight_only" if weight_only else "dynamic")
    ao = _torchao()
    quantized = copy.deepcopy(model).eval()
    config = ao.Int8WeightOnlyConfig() if weight_only else ao.Int8DynamicActivationInt8WeightConfig()
    ao.quantize_(quantized, config)
    quantized.zoo_quantization = "weight_only" if weight_only else "dynamic"  # what save_quantized records
    return quantized


def quantize_static(
    model: nn.Module, calibration: Iterable[Any], example: Any = None, dynamic_batch: bool = True
) -> torch.fx.GraphModule:
    """Static int8 through torchao's PT2E flow with ``X86InductorQuantizer``, calibrated on ``calibration``.

    Args:
        model: the float model (left unchanged; exported in eval mode).
        calibration: batches of inputs (tensors, tuples of them, or ``(inputs, targets)`` pairs, of which the inputs
            are used); a few real batches set the activation ranges.
        example: the example input(s) for ``torch.export``; default ``model.example_input_array``.
        dynamic_batch: export the batch axis as dynamic, so any batch size runs.

    Returns:
        The converted graph module (int8 weights, quantize/dequantize nodes); ``torch.compile`` it for int8 kernels.
        Its ``example_input_array`` is set, for :func:`save_quantized`.
    """
    check_supported(model, "static")
    _torchao()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    inputs = example_inputs(model, example)
    was_training = model.training
    model.eval()
    try:
        shapes = tuple({0: torch.export.Dim.DYNAMIC} if dynamic_batch else {} for _ in inputs)
        exported = torch.export.export(model, inputs, dynamic_shapes=shapes).module()
    finally:
        model.train(was_training)
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    seen = 0
    with torch.no_grad():
        for batch in calibration:
            prepared(*_batch_inputs(batch, len(inputs)))
            seen += 1
    if not seen:
        raise ValueError("calibration gave no batch: pass a few real input batches (e.g. a train dataloader)")
    converted = convert_pt2e(prepared)
    _drop_unused_tensors(converted)  # the float weights, replaced by int8 constants
    converted.example_input_array = inputs
    return converted


def _drop_unused_tensors(module: torch.fx.GraphModule) -> None:
    """Delete the parameters and buffers no node reads, so the state dict and saved files hold the int8 weights only."""
    module.graph.eliminate_dead_code()
    used = {node.target for node in module.graph.nodes if node.op == "get_attr"}
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for name, _ in named:
        if name not in used:
            owner, _, attr = name.rpartition(".")
            delattr(module.get_submodule(owner) if owner else module, attr)
    module.delete_all_unused_submodules()
    module.recompile()


def quantize(
    model: nn.Module, method: Method = "auto", calibration: Iterable[Any] | None = None, example: Any = None
) -> nn.Module:
    """Int8 ``model`` by ``method``; ``"auto"``: static with calibration batches for models with convolutions, else
    dynamic (Linear layers).

    Raises:
        UnsupportedModelError: for recurrent models, or when ``method`` finds no layer to quantize.
        ValueError: for ``static`` without calibration batches.
    """
    if method == "auto":
        check_supported(model, "static")
        method = "static" if any(isinstance(m, _CONV) for m in model.modules()) else "dynamic"
    if method == "static":
        if calibration is None:
            raise ValueError("static int8 needs calibration batches (a few real input batches)")
        return quantize_static(model, calibration, example)
    if method in ("dynamic", "weight_only"):
        return quantize_linear(model, weight_only=method == "weight_only")
    raise ValueError(f"method must be 'auto', 'dynamic', 'weight_only' or 'static', got {method!r}")


def _batch_inputs(batch: Any, count: int) -> tuple[torch.Tensor, ...]:
    """The model inputs of a calibration batch: a tensor, a tuple of ``count`` inputs, or ``(inputs, targets...)``."""
    if isinstance(batch, torch.Tensor):
        return (batch,)
    batch = tuple(batch)
    if count == 1 and isinstance(batch[0], torch.Tensor):
        return (batch[0],)
    if len(batch) >= count and all(isinstance(x, torch.Tensor) for x in batch[:count]):
        return batch[:count]
    raise TypeError(f"a calibration batch must be a tensor or a tuple starting with {count} input tensors")


# --- size, saving, loading ----------------------------------------------------------------------------------------


def serialized_mb(model: nn.Module) -> float:
    """Size of ``torch.save(model.state_dict())`` in MB (10^6 bytes)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1e6


def save_quantized(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write a quantized model: a static (PT2E) one as a ``torch.export`` program (``.pt2``), a
    :func:`quantize_linear` one as its state dict (``torch.save``; loads with ``weights_only=True``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(model, torch.fx.GraphModule):
        inputs = example_inputs(model, getattr(model, "example_input_array", None))
        shapes = tuple({0: torch.export.Dim.DYNAMIC} for _ in inputs)
        torch.export.save(torch.export.export(model, inputs, dynamic_shapes=shapes), path)
    else:
        method = getattr(model, "zoo_quantization", None)
        if method not in ("dynamic", "weight_only"):
            raise ValueError("save_quantized takes a model from quantize_linear or quantize_static")
        torch.save({"method": method, "state_dict": model.state_dict()}, path)
    return path


def load_quantized(path: str | os.PathLike[str], float_model: nn.Module | None = None) -> nn.Module:
    """Read what :func:`save_quantized` wrote: a ``.pt2`` program (as a module), or a state dict into a
    :func:`quantize_linear` copy of ``float_model`` (an unquantized model of the same architecture).

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        ValueError: naming ``path`` when it is not a quantized model file of these kinds.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such quantized model file")
    if path.suffix == ".pt2":
        try:
            return torch.export.load(str(path)).module()
        except Exception as error:
            raise ValueError(f"{path} is not a readable torch.export program ({type(error).__name__})") from error
    if float_model is None:
        raise ValueError(f"{path} is a state dict: pass the float model of its architecture as float_model")
    _torchao()  # registers its tensor subclasses as safe globals for weights_only loading
    saved = load_file(path, "quantized state dict")
    if not isinstance(saved, dict) or saved.get("method") not in ("dynamic", "weight_only"):
        raise ValueError(f"{path} holds no state dict written by save_quantized (zoo quantize)")
    model = quantize_linear(float_model, weight_only=saved["method"] == "weight_only")
    model.load_state_dict(saved["state_dict"], assign=True)
    return model


def main(args: Sequence[str] | None = None) -> Path:
    """``zoo quantize``: the Linear layers of a checkpoint's model to int8 (``dynamic``: weights and activations;
    ``weight_only``), written with :func:`save_quantized`; prints the sizes. Static int8 of convolutions needs
    calibration batches: :func:`quantize_static` in Python.

    Raises:
        SystemExit: with a message naming the file or the layers at fault.
    """
    from recipes.tools.command import check_output_file, named_errors, parse, tool_parser
    from zoo.checkpoint import load_from_checkpoint

    parser = tool_parser("quantize", __doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=str, help="a checkpoint of a zoo model")
    parser.add_argument("--method", type=Literal["dynamic", "weight_only"], default="dynamic")
    parser.add_argument("--output", type=str | None, default=None, help="the file (default: <checkpoint>_int8.pt)")
    parser.add_argument("--overwrite", type=bool, default=False, help="replace --output when it exists")
    options = parse(parser, args)
    output = Path(options.output or f"{Path(options.ckpt_path).stem}_int8.pt")
    check_output_file(output, options.overwrite, (".pt", ".pth"))
    with named_errors(ImportError):
        model = load_from_checkpoint(options.ckpt_path)
        quantized = quantize_linear(model, weight_only=options.method == "weight_only")
        save_quantized(quantized, output)
    sizes = f"{serialized_mb(model):.3f} MB float -> {serialized_mb(quantized):.3f} MB int8"
    print(f"wrote {output}: {sizes} ({options.method})")
    return output
