"""Regenerate the reference tables of ``docs/*.md`` from the registry, the code and the recorded results.

A table lives between two marker comments in a page::

    <!-- generated: models -->
    | name | family | ... |
    <!-- end generated -->

Tables: ``models`` (``zoo.list_models()``), ``datamodules`` (``datamodules.DATAMODULES``), ``recipes``
(``recipes/<name>.yaml`` beside ``recipes/<name>.py``), ``recipe-settings`` (what each recipe trains with: its YAML
over ``recipes/defaults.yaml`` and the classes' defaults), ``callbacks`` (the classes of ``callbacks.__all__``) and
``results`` (``benchmarks/results/*.json`` with a ``rows`` list).

    python docs/generate.py          # rewrite the pages in place
    python docs/generate.py --check  # exit 1 and name each page whose tables differ from what would be generated
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RECIPES = ROOT / "recipes"
RESULTS = ROOT / "benchmarks" / "results"

#: The keys every row of a results file holds (``versions`` is a dict of package -> version).
RESULT_KEYS = ("what", "value", "command", "machine", "versions", "date")
NO_RESULTS = "No results have been recorded yet: no `benchmarks/results/*.json` file has a `rows` list."

_BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL)
_ROLE = re.compile(r":[\w:]+:`~?([^`]+)`")  # Sphinx roles (:func:`diagnose`) read as plain code in Markdown


def summary(doc: str | None) -> str:
    """The first paragraph of a docstring on one line (a summary wrapped over two lines stays whole).

    >>> summary('''Two words
    ... and more.
    ...
    ... Details.''')
    'Two words and more.'
    """
    if not doc:
        return ""
    paragraph = inspect.cleandoc(doc).split("\n\n", 1)[0]
    return _ROLE.sub(r"`\1`", " ".join(paragraph.split())).replace("``", "`")


def cell(value: Any) -> str:
    """A value as one Markdown table cell: on one line, with ``|`` escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def code(value: Any) -> str:
    """A value as inline code in a cell (empty when there is no value)."""
    text = cell(value)
    if not text:
        return ""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table, one line per row, ending with a newline."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def models_table() -> str:
    """One row per registered preset: name, family, class, task, input, parameter count and source."""
    import zoo

    rows = []
    for name in zoo.list_models():
        info = zoo.model_info(name)
        params = f"{info.num_params:,}" if info.num_params is not None else ""
        rows.append(
            [
                code(name),
                cell(info.family),
                code(info.cls.__name__),
                cell(info.task),
                code(info.input_spec.describe()),
                params,
                cell(info.source),
            ]
        )
    return table(["name", "family", "class", "task", "input", "params", "source"], rows)


def weights_table() -> str:
    """One row per published set of weights (``zoo/weights/weights.json``, which holds each file's SHA-256 too): the
    preset, its test metric and value, the data, the parameter count, the file's size, the command that trained it
    and the date."""
    from zoo.weights import PACKAGE_WEIGHTS, read_manifest

    rows = []
    for preset, weights in read_manifest().items():
        size = (PACKAGE_WEIGHTS / weights.file).stat().st_size / 1e6
        rows.append(
            [
                code(preset),
                f"{weights.metric} {weights.value:.4f}",
                cell(weights.data),
                f"{weights.num_params:,}",
                f"{size:.2f} MB",
                code(weights.command),
                cell(weights.date),
            ]
        )
    header = ["preset", "test metric", "data", "params", "file", "trained by", "date"]
    return table(header, rows)


def datamodules_table() -> str:
    """One row per short name of ``datamodules.DATAMODULES``: the name, the class and its docstring's summary."""
    import datamodules

    rows = [
        [code(name), code(cls.__name__), cell(summary(cls.__doc__))] for name, cls in datamodules.DATAMODULES.items()
    ]
    return table(["name (`--data`)", "class", "description"], rows)


def _class_path(config: dict[str, Any], key: str) -> str:
    section = config.get(key)
    return str(section.get("class_path", "")) if isinstance(section, dict) else ""


def recipes_table(recipes_dir: Path = RECIPES) -> str:
    """One row per ``<name>.yaml`` with a ``<name>.py`` beside it: the model and data classes and the module summary.

    The module docstring is read with ``ast``; no recipe is imported.
    """
    rows = []
    for config_path in sorted(recipes_dir.glob("*.yaml")):
        module_path = config_path.with_suffix(".py")
        if not module_path.is_file():
            continue
        config = yaml.safe_load(config_path.read_text()) or {}
        doc = ast.get_docstring(ast.parse(module_path.read_text()))
        model, data = _class_path(config, "model"), _class_path(config, "data")
        rows.append([code(config_path.stem), code(model), code(data), cell(summary(doc))])
    return table(["recipe", "model", "data", "description"], rows)


def init_defaults(cls: type) -> dict[str, Any]:
    """The default of every named init argument of ``cls``, from the first class of its MRO that declares it."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass) and klass is not object:
            for parameter in inspect.signature(klass.__init__).parameters.values():
                if parameter.default is not inspect.Parameter.empty:
                    found[parameter.name] = parameter.default
    return found


def _schedule(args: dict[str, Any]) -> str:
    warmup = [f"{args['warmup_epochs']:g} warmup epochs"] if args.get("warmup_epochs") else []
    warmup += [f"{args['warmup_steps']} warmup steps"] if args.get("warmup_steps") else []
    floor = f" to {args['min_lr_ratio']:g} of the peak" if args.get("min_lr_ratio") else ""
    return ", ".join([*warmup, f"{args.get('scheduler', 'cosine')}{floor}"])


def recipe_settings_table(recipes_dir: Path = RECIPES) -> str:
    """What each recipe trains with, resolved as its run resolves it: the recipe's YAML over
    ``recipes/defaults.yaml``, over the model's and datamodule's init defaults."""
    from zoo.checkpoint import import_class

    shared = (yaml.safe_load((recipes_dir / "defaults.yaml").read_text()) or {}).get("trainer", {})
    rows = []
    for config_path in sorted(recipes_dir.glob("*.yaml")):
        if not config_path.with_suffix(".py").is_file():
            continue
        config = yaml.safe_load(config_path.read_text()) or {}
        classes = {key: import_class(_class_path(config, key), trusted=None) for key in ("model", "data")}
        model = {**init_defaults(classes["model"]), **(config["model"].get("init_args") or {})}
        data = {**init_defaults(classes["data"]), **(config["data"].get("init_args") or {})}
        trainer = {**shared, **(config.get("trainer") or {})}
        steps = trainer.get("max_steps") or -1
        length = f"{steps} steps" if steps > 0 else f"{trainer.get('max_epochs')} epochs"
        names = {"dropout": "dropout", "drop_rate": "dropout", "drop_path_rate": "drop-path"}
        dropout = [f"{name} {model[key]:g}" for key, name in names.items() if model.get(key)]
        rows.append(
            [
                code(config_path.stem),
                code(classes["model"].__name__),
                cell(f"{model['optimizer']} {model['lr']:g}"),
                cell(f"{model['weight_decay']:g}"),
                cell(_schedule(model)),
                cell(data.get("batch_size", "")),
                cell(", ".join(dropout) or "0"),
                cell(f"{model.get('label_smoothing', 0):g}" if "label_smoothing" in model else "-"),
                cell(trainer.get("gradient_clip_val") or "none"),
                cell(length),
            ]
        )
    header = ["recipe", "model", "optimizer, peak lr", "weight decay", "schedule", "batch", "dropout"]
    return table([*header, "label smoothing", "clipping", "length"], rows)


def callbacks_table() -> str:
    """One row per class in ``callbacks.__all__``: its name and its docstring's summary."""
    import callbacks

    rows = []
    for name in callbacks.__all__:
        obj = getattr(callbacks, name)
        if inspect.isclass(obj):
            rows.append([code(name), cell(summary(obj.__doc__))])
    return table(["class", "description"], rows)


def result_rows(path: Path) -> list[dict[str, Any]] | None:
    """The result rows of a results file, or ``None`` when it has none.

    The shape: a JSON object whose ``rows`` is a list of objects; those with the keys of :data:`RESULT_KEYS` and a
    ``versions`` object are result rows (a benchmark may keep other rows beside them, such as its baselines).
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        return None
    shown = [
        row
        for row in rows
        if isinstance(row, dict) and all(key in row for key in RESULT_KEYS) and isinstance(row["versions"], dict)
    ]
    return shown or None


def results_table(results_dir: Path = RESULTS) -> str:
    """One row per entry of every results file in ``results_dir`` (file name order); files of other shapes are
    skipped. Without any, the header and a line saying so."""
    rows = []
    for path in sorted(results_dir.glob("*.json")):
        for row in result_rows(path) or []:
            versions = ", ".join(f"{package} {version}" for package, version in row["versions"].items())
            rows.append(
                [
                    cell(row["what"]),
                    cell(row["value"]),
                    code(row["command"]),
                    cell(row["machine"]),
                    cell(versions),
                    cell(row["date"]),
                ]
            )
    text = table(list(RESULT_KEYS), rows)
    return text if rows else text + "\n" + NO_RESULTS + "\n"


#: Every generated table by its marker name.
TABLES: dict[str, Callable[[], str]] = {
    "models": models_table,
    "weights": weights_table,
    "datamodules": datamodules_table,
    "recipes": recipes_table,
    "recipe-settings": recipe_settings_table,
    "callbacks": callbacks_table,
    "results": results_table,
}


def render_tables() -> dict[str, str]:
    """Every table of :data:`TABLES`, rendered now."""
    return {name: build() for name, build in TABLES.items()}


def markers(text: str) -> list[str]:
    """The names of the generated blocks of a page, in order."""
    return [match["name"] for match in _BLOCK.finditer(text)]


def update(text: str, tables: dict[str, str]) -> str:
    """``text`` with every generated block replaced by its table; an unknown block name is a ``ValueError``."""

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in tables:
            raise ValueError(f"unknown generated table {name!r}; known: {', '.join(tables)}")
        return match.group(1) + tables[name] + match.group(4)

    return _BLOCK.sub(replace, text)


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def pages(docs_dir: Path = DOCS) -> list[Path]:
    """The Markdown pages of ``docs_dir``."""
    return sorted(docs_dir.glob("*.md"))


def check(docs_dir: Path = DOCS, tables: dict[str, str] | None = None) -> list[str]:
    """Problems with the committed tables: a page whose tables differ from what would be generated, or a table that
    no page holds. Empty when the pages are up to date."""
    tables = render_tables() if tables is None else tables
    problems, placed = [], set()
    for page in pages(docs_dir):
        text = page.read_text()
        placed.update(markers(text))
        try:
            stale = update(text, tables) != text
        except ValueError as error:
            problems.append(f"{_shown(page)}: {error}")
            continue
        if stale:
            problems.append(f"{_shown(page)}: generated tables differ from the code; run `python docs/generate.py`")
    problems += [f"no page in {_shown(docs_dir)} holds the {name!r} table" for name in tables if name not in placed]
    return problems


def write(docs_dir: Path = DOCS, tables: dict[str, str] | None = None) -> list[Path]:
    """Rewrite the generated tables of every page in place; returns the pages that changed."""
    tables = render_tables() if tables is None else tables
    changed = []
    for page in pages(docs_dir):
        text = page.read_text()
        new = update(text, tables)
        if new != text:
            page.write_text(new)
            changed.append(page)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a table differs")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    for page in write():
        print(f"rewrote {_shown(page)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
