"""What the reading commands print for scripts: with ``--json``, one JSON document on stdout
(keys sorted, never coloured) and nothing else there; counts, notes and warnings go to stderr."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def json_option(shape: str) -> Callable[[F], F]:
    """``--json`` (as ``as_json``) on a reading command; ``shape`` says what the document is."""
    return click.option("--json", "as_json", is_flag=True,
                        help=f"One JSON document on stdout: {shape}.")


def emit_json(document: Any) -> None:
    """``document`` as indented JSON with sorted keys, so that the same data always prints
    the same; values JSON cannot hold (datetimes) as their text."""
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str), color=False)


def note(text: str) -> None:
    """A line for the person at the terminal, on stderr, so stdout stays the data."""
    click.echo(text, err=True)
