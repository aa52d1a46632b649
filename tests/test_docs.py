"""The README is a landing page and the docs hold together: generated tables match the code, every page is linked
from the README, every relative link resolves, and no commit hash is left in prose."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
MAX_README_LINES = 300

_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_CODE = re.compile(r"(`+).+?\1")
_HEX = re.compile(r"\b[0-9a-f]{7,40}\b")
_EXPONENT = re.compile(r"\d+e\d+")  # 1e10000 is a number, not a hash


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


@pytest.fixture(scope="module")
def tables() -> dict[str, str]:
    return generate.render_tables()


def prose_lines(text: str, keep_code_spans: bool = True) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks (inline code spans removed unless kept)."""
    lines, fence = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        marker = stripped[:3]
        if marker in ("```", "~~~"):
            if fence is None:
                fence = marker
            elif marker == fence:
                fence = None
            continue
        if fence is None:
            lines.append(line if keep_code_spans else _INLINE_CODE.sub("", line))
    return lines


def commit_hashes(text: str) -> list[str]:
    """Abbreviated or full commit hashes in the prose of a Markdown text: hex words of 7 to 40 characters with a digit
    and a letter, and all-digit ones on a line that says "commit" (elsewhere they are plain numbers)."""
    found = []
    for line in prose_lines(text):
        for word in _HEX.findall(line):
            if _EXPONENT.fullmatch(word) or not re.search(r"\d", word):
                continue
            if re.search(r"[a-f]", word) or re.search(r"commit", line, re.IGNORECASE):
                found.append(word)
    return found


def links(text: str) -> list[str]:
    """Link and image targets of a Markdown text, outside code."""
    return [target for line in prose_lines(text, keep_code_spans=False) for target in _LINK.findall(line)]


def slugs(text: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown text."""
    seen: Counter[str] = Counter()
    anchors = set()
    for line in prose_lines(text):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match[1].strip().lower()).replace(" ", "-")
        anchors.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return anchors


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file, or heading anchor in a Markdown file, does not exist."""
    broken = []
    for target in links(page.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in slugs(resolved.read_text()):
            broken.append(f"{target}: no heading with that anchor")
    return broken


# --- generated tables ----------------------------------------------------------------------------------------------
def test_generated_tables_match_the_code(tables):
    problems = generate.check(DOCS, tables)
    assert not problems, "\n".join(problems)


def test_check_names_a_page_whose_table_drifted(tables, tmp_path):
    for page in PAGES:
        (tmp_path / page.name).write_text(page.read_text())
    models = tmp_path / "models.md"
    lines = generate.update(models.read_text(), tables).splitlines(keepends=True)
    row = next(i for i, line in enumerate(lines) if line.startswith("| `cnn_digits` |"))  # a row of the table
    lines[row] = lines[row].replace("`cnn_digits`", "`cnn_digitz`")
    models.write_text("".join(lines))
    problems = generate.check(tmp_path, tables)
    assert len(problems) == 1 and "models.md" in problems[0]
    generate.write(tmp_path, tables)
    assert generate.check(tmp_path, tables) == []


def test_check_names_a_table_that_no_page_holds(tables, tmp_path):
    (tmp_path / "empty.md").write_text("# Empty\n")
    problems = generate.check(tmp_path, tables)
    assert len(problems) == len(tables) and all("holds the" in problem for problem in problems)


def test_every_table_has_one_row_per_entry(tables):
    import callbacks
    import datamodules
    import zoo

    def rows(name: str) -> int:
        return sum(line.startswith("| ") for line in tables[name].splitlines()) - 2  # less header and rule

    assert rows("models") == len(zoo.list_models())
    assert rows("datamodules") == len(datamodules.DATAMODULES)
    assert rows("callbacks") == sum(isinstance(getattr(callbacks, name), type) for name in callbacks.__all__)
    recipes = [path for path in (ROOT / "recipes").glob("*.yaml") if path.with_suffix(".py").is_file()]
    assert rows("recipes") == len(recipes) > 0


def test_results_table_reads_only_rows_of_the_results_shape(tmp_path):
    row = {
        "what": "digits_cnn test accuracy",
        "value": 0.5,
        "command": "make demo",
        "machine": "a CPU",
        "versions": {"torch": "1", "lightning": "2"},
        "date": "2000-01-01",
    }
    (tmp_path / "a.json").write_text(json.dumps({"rows": [row]}))
    (tmp_path / "b.json").write_text(json.dumps({"table": [row]}))  # another benchmark's own format
    (tmp_path / "c.json").write_text(json.dumps({"rows": [{**row, "versions": "torch 1"}]}))
    (tmp_path / "d.json").write_text(json.dumps({"rows": [{key: row[key] for key in list(row)[:-1]}]}))
    (tmp_path / "e.json").write_text("{not json")
    baseline = {key: value for key, value in row.items() if key not in ("what", "value")}
    (tmp_path / "f.json").write_text(json.dumps({"rows": [baseline, {**row, "what": "with the option"}]}))
    text = generate.results_table(tmp_path)
    assert text.splitlines()[2:] == [
        "| digits_cnn test accuracy | 0.5 | `make demo` | a CPU | torch 1, lightning 2 | 2000-01-01 |",
        "| with the option | 0.5 | `make demo` | a CPU | torch 1, lightning 2 | 2000-01-01 |",
    ]
    empty = tmp_path / "none"
    empty.mkdir()
    assert generate.NO_RESULTS in generate.results_table(empty)


# --- the README ------------------------------------------------------------------------------------------------------
def test_readme_is_a_landing_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move content to docs/"


def test_readme_links_every_docs_page_and_only_existing_ones():
    targets = {target.partition("#")[0] for target in links(README.read_text())}
    doc_links = {target for target in targets if target.startswith("docs/") and target.endswith(".md")}
    missing = sorted(target for target in doc_links if not (ROOT / target).is_file())
    assert not missing, f"README.md links pages that do not exist: {missing}"
    unlinked = sorted(f"docs/{page.name}" for page in PAGES if f"docs/{page.name}" not in doc_links)
    assert not unlinked, f"README.md does not link: {unlinked}"


# --- every page ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda page: page.name)
def test_no_commit_hash_in_prose(page):
    hashes = commit_hashes(page.read_text())
    assert not hashes, f"{page.name} names commits {hashes}: describe the change instead"


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda page: page.name)
def test_relative_links_resolve(page):
    broken = broken_links(page)
    assert not broken, f"{page.name}: {broken}"


def test_the_checks_find_what_they_look_for(tmp_path):
    text = "Fixed at 8f2cef0 (see `4477ffe`).\n\n```\nsha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b\n```\n"
    assert commit_hashes(text) == ["8f2cef0", "4477ffe"]
    assert commit_hashes("Measured at commit 4709575.") == ["4709575"]
    assert commit_hashes("11_689_512 parameters, 1234567 tokens/s, 1e10000, 2284 weeks, deadbeef, 1.0e7") == []
    page = tmp_path / "page.md"
    page.write_text("# A title\n\n[ok](#a-title) [gone](missing.md) [bad anchor](#nope) `[code](x.md)`\n")
    assert broken_links(page) == ["missing.md: no such file", "#nope: no heading with that anchor"]
