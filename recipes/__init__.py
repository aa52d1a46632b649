"""Recipes (LightningCLI pre-bound to a YAML of defaults) and the tools; see ``docs/recipes.md``.

Importing this package first checks that ``zoo``, ``datamodules`` and ``callbacks`` resolve to this project's
packages: ``python -m recipes.<name>`` puts the working directory first on ``sys.path``, so a ``callbacks.py`` (or a
``datamodules/`` package) of a user's own project there would be imported instead and fail far from the cause.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PROJECT_PACKAGES = ("zoo", "datamodules", "callbacks")
#: The folder that holds this project's packages.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ShadowedPackageError(ImportError):
    """A module outside this project would be imported under the name of one of its packages."""


def check_packages(root: Path = PROJECT_ROOT) -> None:
    """Raise :class:`ShadowedPackageError` naming the file that would be imported for one of
    :data:`PROJECT_PACKAGES` instead of the package in ``root``, with what to do."""
    for name in PROJECT_PACKAGES:
        module = sys.modules.get(name)
        spec = module.__spec__ if module is not None else importlib.util.find_spec(name)
        origin = getattr(spec, "origin", None)
        expected = root / name / "__init__.py"
        if origin is None or Path(origin).resolve() == expected:
            continue  # a namespace folder never shadows a regular package
        raise ShadowedPackageError(
            f"{origin} shadows lightning-zoo's `{name}` package ({expected.parent}): Python finds it first because "
            f"{Path(origin).parent} is on sys.path (`python -m` puts the working directory first). Run "
            "`python -P -m recipes.<name> ...` (Python 3.11+: the working directory is left off sys.path), run it from "
            "another folder, or rename that file; the `zoo` command is not affected.",
            name=name,
            path=origin,
        )


try:
    check_packages()
except ShadowedPackageError as error:
    if sys.argv[:1] == ["-m"]:  # `python -m recipes.<name>` is importing this package: one line, no traceback
        raise SystemExit(f"error: {error}") from None
    raise
