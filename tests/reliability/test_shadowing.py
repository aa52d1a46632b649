"""A user's own ``callbacks.py``, ``zoo.py`` or ``datamodules/`` package in the working directory would be imported
instead of this project's packages by ``python -m recipes.<name>``: the recipe stops at once, naming the file and
the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # the project without relying on how it is installed
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("shadow", "package"), [("callbacks.py", "callbacks"), ("datamodules/__init__.py", "datamodules")]
)
def test_a_shadowing_module_in_the_working_directory_is_named(tmp_path: Path, shadow: str, package: str):
    path = tmp_path / shadow
    path.parent.mkdir(exist_ok=True)
    path.write_text("FastPath = None\n")
    result = _run(tmp_path, "-m", "recipes.digits_cnn", "fit", "--print_config")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {path} shadows lightning-zoo's `{package}` package ({ROOT / package})")
    assert "python -P -m recipes.<name>" in result.stderr and "Traceback" not in result.stderr


def test_imported_from_python_the_error_is_an_import_error(tmp_path: Path):
    (tmp_path / "zoo.py").write_text("")
    result = _run(tmp_path, "-c", "import recipes")
    assert result.returncode == 1
    assert f"recipes.ShadowedPackageError: {tmp_path / 'zoo.py'} shadows lightning-zoo's `zoo` package" in result.stderr


def test_a_folder_without_init_does_not_shadow(tmp_path: Path):
    (tmp_path / "zoo").mkdir()  # a namespace folder: Python prefers the regular package further down sys.path
    result = _run(tmp_path, "-m", "recipes.digits_cnn", "fit", "--print_config")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "class_path: zoo.CNN" in result.stdout


@pytest.mark.skipif(sys.version_info < (3, 11), reason="python -P is new in Python 3.11")
def test_the_suggested_fix_runs_the_recipe(tmp_path: Path):
    (tmp_path / "callbacks.py").write_text("")
    result = _run(tmp_path, "-P", "-m", "recipes.digits_cnn", "fit", "--print_config")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "class_path: zoo.CNN" in result.stdout
