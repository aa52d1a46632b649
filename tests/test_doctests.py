"""The examples in docstrings run: every module of the packages, through doctest."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import callbacks
import datamodules
import zoo

SUBMODULES = sorted(
    info.name
    for package in (zoo, datamodules, callbacks)
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}.")
)
MODULES = [*SUBMODULES, "zoo", "callbacks"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
