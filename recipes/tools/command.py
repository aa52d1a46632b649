"""What the tool commands share: one parser style, as LightningCLI's (jsonargparse, ``--snake_case`` flags, values
as ``--flag value`` or ``--flag=value``, ``--config file.yaml`` and ``--print_config``), and errors that name the
problem and exit non-zero without a traceback."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from datamodules.base import ImageDecodeError, ImageTooLargeError


def tool_parser(name: str, doc: str) -> ArgumentParser:
    """The parser of ``zoo <name>``, described by the module docstring ``doc``, with ``--config``."""
    parser = ArgumentParser(prog=f"zoo {name}", description=doc, env_prefix="ZOO", default_env=False)
    parser.add_argument("--config", action=ActionConfigFile, help="read the options from a YAML file")
    return parser


def parse(parser: ArgumentParser, args: Sequence[str] | None) -> Namespace:
    """``args`` as on the command line (``None``: ``sys.argv``)."""
    return parser.parse_args(None if args is None else list(args))


def exactly_one(parser: ArgumentParser, options: Namespace, *names: str) -> str:
    """The one of ``names`` that was given; a usage error when none or several were."""
    given = [name for name in names if options.get(name) not in (None, [], "")]
    if len(given) != 1:
        parser.error(f"give exactly one of {', '.join('--' + name for name in names)}")
    return given[0]


@contextlib.contextmanager
def named_errors(*more: type[BaseException]) -> Iterator[None]:
    """Turn the errors a user can fix (missing or unreadable files, input that does not fit) into ``SystemExit``
    with ``error: <message>``."""
    known: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError, ImageDecodeError, ImageTooLargeError)
    try:
        yield
    except (*known, *more) as error:
        raise SystemExit(f"error: {error}") from None


def check_output_file(
    path: str | os.PathLike[str] | None, overwrite: bool, suffixes: Sequence[str] = (), flag: str = "--output"
) -> Path | None:
    """``path`` checked before any work is done: its folder exists, it is not a folder, its suffix is one of
    ``suffixes`` (the formats it may hold) and it does not exist yet unless ``overwrite``.

    Raises:
        SystemExit: ``error: ...`` naming the path and what to do.
    """
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise SystemExit(f"error: {flag} {path} is a folder; give the path of a file")
    if suffixes and path.suffix.lower() not in suffixes:
        raise SystemExit(f"error: {flag} {path} must end in {' or '.join(suffixes)}, the format written")
    if not path.parent.is_dir():
        raise SystemExit(f"error: the folder {path.parent}/ of {flag} {path} does not exist; create it first")
    if path.exists() and not overwrite:
        raise SystemExit(f"error: {flag} {path} exists; pass --overwrite to replace it")
    return path


def check_output_folder(
    folder: str | os.PathLike[str], names: Iterable[str], overwrite: bool, flag: str = "--output"
) -> Path:
    """The folder that will hold files ``names``, checked before any work: not a file, and none of those files
    there yet unless ``overwrite`` (the folder itself is made when the files are written).

    Raises:
        SystemExit: ``error: ...`` naming the path and what to do.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SystemExit(f"error: {flag} {folder} is a file; give a folder to write into")
    existing = [name for name in names if (folder / name).exists()]
    if existing and not overwrite:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise SystemExit(f"error: {folder}/ already holds {shown}; pass --overwrite to replace them")
    return folder


def as_dict(options: Namespace) -> dict[str, Any]:
    """The parsed options as a plain dict (``--config`` left out)."""
    return {key: value for key, value in options.as_dict().items() if key != "config"}
