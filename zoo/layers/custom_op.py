"""A custom C++ operator, end to end: ``zoo::swish`` (``x * sigmoid(beta * x)``) from ``zoo/csrc/swish.cpp``.

The pattern, in the order a new op repeats it:

1. **C++ kernels and a schema** (``zoo/csrc/swish.cpp``): ``TORCH_LIBRARY(zoo, m)`` declares ``zoo::swish`` and
   ``zoo::swish_backward``; ``TORCH_LIBRARY_IMPL(zoo, CPU, m)`` gives their CPU kernels.
2. **A lazy build** (:func:`load_extension`): ``torch.utils.cpp_extension.load`` compiles the file on the first
   call, never at ``import zoo``, into a per-user cache (``$ZOO_EXTENSIONS_DIR`` or
   ``~/.cache/lightning-zoo/torch_extensions/<torch and Python version>``), and later calls (in any process) load
   the cached library unless the source changed. Building needs a C++ compiler (``c++`` or ``$CXX``) and the
   ``ninja`` build tool (``pip install ninja``).
3. **Python registrations**, once the library is loaded: ``torch.library.register_autograd`` (the backward calls
   the C++ backward kernel) and ``torch.library.register_fake`` for both ops (output shape and dtype without
   computing, so ``torch.compile`` and ``torch.export`` trace through the op).
4. **A function for users** (:func:`fused_swish`) that calls the op when it is built and otherwise falls back to
   its PyTorch twin :func:`swish_reference`, warning once with what is missing. Falling back, rather than raising,
   keeps a model that uses it working on machines without a compiler (the outputs are equal); code that needs the
   C++ op calls :func:`load_extension`, which raises :class:`ExtensionUnavailable` instead.

``torch.compile(fullgraph=True)`` traces :func:`fused_swish` once the build has been tried (call
:func:`load_extension` or run it once eagerly first): tracing cannot run the compiler.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "swish.cpp"
_NOT_TRIED = "not tried"
_status: str | None = _NOT_TRIED  # None once loaded; otherwise why the op is unavailable
_warned = False
_registered = False


class ExtensionUnavailable(RuntimeError):
    """The C++ operator cannot be built or loaded here; the message says what is missing."""


def swish_reference(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """The PyTorch twin of ``zoo::swish``: ``x * sigmoid(beta * x)``."""
    return x * torch.sigmoid(beta * x)


def build_directory() -> Path:
    """Where the library is built and cached: one folder per torch and Python version (the C++ ABI)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lightning-zoo" / "torch_extensions"
    root = Path(os.environ.get("ZOO_EXTENSIONS_DIR") or cache)
    tag = f"torch{torch.__version__}-py{sys.version_info.major}{sys.version_info.minor}".replace("+", "_")
    return root / tag / "zoo_swish"


def missing_tools() -> list[str]:
    """What building needs and this machine lacks (empty when both a C++ compiler and ninja are there)."""
    missing = []
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        missing.append(f"a C++ compiler ({compiler!r} is not on PATH: install g++ or clang, or set CXX)")
    if _ninja_dir() is None:
        missing.append("the ninja build tool (pip install ninja)")
    return missing


def load_extension() -> None:
    """Build (first call only) and load ``zoo::swish``; raise :class:`ExtensionUnavailable` naming what is missing."""
    global _status
    if _status == _NOT_TRIED:
        _status = _build_and_register()
    if _status is not None:
        raise ExtensionUnavailable(_status)


def fused_swish(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """``x * sigmoid(beta * x)`` by the C++ op for CPU tensors when it builds, else by :func:`swish_reference`
    (with one warning saying what is missing). Differentiable either way."""
    global _warned
    if x.device.type != "cpu":  # the op has a CPU kernel only
        return swish_reference(x, beta)
    try:
        load_extension()
    except ExtensionUnavailable as error:
        if not _warned:
            _warned = True
            warnings.warn(f"{error}; fused_swish uses its PyTorch twin swish_reference", stacklevel=2)
        return swish_reference(x, beta)
    return torch.ops.zoo.swish(x, beta)


def _ninja_dir() -> str | None:
    """The folder of a ``ninja`` executable: on PATH, or the one the ``ninja`` Python package installs."""
    found = shutil.which("ninja")
    if found:
        return str(Path(found).parent)
    try:
        import ninja
    except ImportError:
        return None
    return ninja.BIN_DIR


@contextlib.contextmanager
def _ninja_on_path() -> Iterator[None]:
    """torch looks for ``ninja`` on PATH; a venv's ``bin`` is not on it when Python is run by its full path."""
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([_ninja_dir() or "", path])
    try:
        yield
    finally:
        os.environ["PATH"] = path


def _build_and_register() -> str | None:
    missing = missing_tools()
    if missing:
        return f"zoo::swish cannot be built ({SOURCE.name}): missing {' and '.join(missing)}"
    from torch.utils import cpp_extension  # imported here: it is slow to import and only building needs it

    folder = build_directory()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with _ninja_on_path():
            cpp_extension.load(
                "zoo_swish", [str(SOURCE)], extra_cflags=["-O3"], build_directory=str(folder), is_python_module=False
            )
    except (RuntimeError, OSError, ImportError) as error:
        return f"zoo::swish failed to build from {SOURCE} in {folder}: {error}"
    _register_python_parts()
    return None


def _register_python_parts() -> None:
    global _registered
    if _registered:  # registering twice raises; the library itself loads once per process
        return
    torch.library.register_fake("zoo::swish")(_swish_fake)
    torch.library.register_fake("zoo::swish_backward")(_swish_backward_fake)
    torch.library.register_autograd("zoo::swish", _swish_backward, setup_context=_swish_setup_context)
    _registered = True


def _swish_fake(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)  # the kernel writes a contiguous output


def _swish_backward_fake(grad: torch.Tensor, x: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _swish_setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    x, beta = inputs
    ctx.save_for_backward(x)
    ctx.beta = beta


def _swish_backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
    (x,) = ctx.saved_tensors
    return torch.ops.zoo.swish_backward(grad, x, ctx.beta), None  # no gradient for the float beta
