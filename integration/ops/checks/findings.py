"""What a check reports (a finding: which check, how it went, what to fix) and what it is given."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from integration.settings import Settings

Level = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class Finding:
    """One line of the report: which check, how it went, and what to fix."""

    check: str
    level: Level
    message: str


@dataclass(frozen=True)
class Context:
    settings: Settings
    timeout: float
    groups: frozenset[str]
    #: The findings of the checks that ran before.
    earlier: list[Finding] = field(default_factory=list)


Check = Callable[[Context], Iterator[Finding]]


def ok(check: str, message: str) -> Finding:
    return Finding(check, "ok", message)


def warning(check: str, message: str) -> Finding:
    return Finding(check, "warning", message)


def error(check: str, message: str) -> Finding:
    return Finding(check, "error", message)


def error_once(ctx: Context, check: str, cause: str, consequence: str,
               message: str | None = None) -> Finding:
    """``message`` (default ``cause``) as an error, or, when an earlier finding already names
    ``cause`` (one mistake that stops several checks), ``consequence`` pointing at it: the
    cause is listed once."""
    earlier = next((f for f in ctx.earlier if cause in f.message), None)
    if earlier is None:
        return error(check, message or cause)
    return error(check, f"{consequence}: see the {earlier.check} error above")


def shown(url: str) -> str:
    """A URL as a report may show it: without its password (each node's, for a broker URL
    that names several, ``a;b;c``)."""
    from kombu.utils.url import maybe_sanitize_url

    return ";".join(str(maybe_sanitize_url(part)) for part in url.split(";"))
