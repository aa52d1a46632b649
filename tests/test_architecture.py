"""The layering the project is built on, read from the source: one loop in the task base, one checkpoint reader, and
an import graph without circles or arrows against the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "datamodules", "callbacks", "recipes")
#: Lightning hooks that run the loop: only the task base defines them.
LOOP_HOOKS = {
    "training_step",
    "validation_step",
    "test_step",
    "predict_step",
    *(f"on_{split}_epoch_{edge}" for split in ("train", "validation", "test", "predict") for edge in ("start", "end")),
}
#: Which packages each package may import (recipes and the tools sit on top).
ALLOWED = {
    "zoo": {"zoo"},
    "datamodules": {"datamodules"},
    "callbacks": {"callbacks"},
    "recipes": {"recipes", "zoo", "datamodules", "callbacks"},
}


def _modules() -> dict[str, Path]:
    """Every module of the packages by dotted name (``zoo.tasks.base``; a package by its own name)."""
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (functions included): ``from a.b import c`` counts as
    ``a.b.c`` when that is a module, else ``a.b``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _is_package_init(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def test_no_import_circles_inside_the_packages():
    """A package's ``__init__`` re-exports its modules; a module importing its own package back would close a
    circle, so modules import the module that defines a name. Edges into a package's ``__init__`` from outside the
    package (``import zoo``) are the public API and count as edges too."""
    assert _cycles(GRAPH) == []


def test_layers_import_only_downwards():
    wrong = [
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if target.split(".")[0] not in ALLOWED[name.split(".")[0]]
    ]
    assert wrong == []


def test_nothing_outside_the_zoo_imports_its_private_modules():
    private = {name for name in MODULES if name.startswith("zoo.") and any(p.startswith("_") for p in name.split("."))}
    wrong = [f"{name} -> {target}" for name, targets in GRAPH.items() for target in targets & private]
    wrong = [edge for edge in wrong if not edge.startswith("zoo")]
    tests = [
        path.name
        for path in (REPO / "tests").rglob("*.py")
        if "zoo._" in path.read_text() and path.name != Path(__file__).name
    ]
    assert wrong == [] and tests == []


def test_only_the_task_base_defines_the_loop():
    """A task says how a batch becomes a loss; the Lightning hooks that run the loop are written once."""
    defined = {}
    for path in sorted((REPO / "zoo" / "tasks").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                hooks = [f.name for f in node.body if isinstance(f, ast.FunctionDef) and f.name in LOOP_HOOKS]
                if hooks:
                    defined[f"{path.name}:{node.name}"] = hooks
    assert set(defined) == {"base.py:TaskModule"}, defined
    assert set(defined["base.py:TaskModule"]) >= {"training_step", "validation_step", "test_step", "predict_step"}


@pytest.mark.parametrize("call", ["torch.load", "import_module"])
def test_files_are_read_and_classes_imported_in_one_place(call):
    """``torch.load`` (checkpoints, weights) and ``importlib.import_module`` (a class a file names) are called only by
    the checkpoint module, so the CRC check, ``weights_only`` and the trust check cannot be skipped."""
    callers = []
    for folder in (*PACKAGES, "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(call.split(".")[-1]):
                    name = ast.unparse(node.func)
                    if name in (call, call.split(".")[-1], f"importlib.{call}"):
                        callers.append(str(path.relative_to(REPO)))
    assert set(callers) == {"zoo/checkpoint.py"}
