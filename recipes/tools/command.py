"""What the tool commands share: one parser style, as LightningCLI's (jsonargparse, ``--snake_case`` flags, values
as ``--flag value`` or ``--flag=value``, ``--config file.yaml`` and ``--print_config``), and errors that name the
problem and exit non-zero without a traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
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


def as_dict(options: Namespace) -> dict[str, Any]:
    """The parsed options as a plain dict (``--config`` left out)."""
    return {key: value for key, value in options.as_dict().items() if key != "config"}
