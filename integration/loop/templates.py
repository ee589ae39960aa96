"""Placeholders in the rules file's texts: checked when the file is read, filled in from a
message's fields when a stage runs."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def check_placeholders(text: str, names: tuple[str, ...], groups: tuple[str, ...]) -> str:
    """Refuse placeholders a text cannot be filled with, so typos fail at load, not at 3 am."""
    for found in PLACEHOLDER.findall(text):
        group, dot, key = found.partition(".")
        if found in names or (dot and key and group in groups):
            continue
        allowed = [*names, *(f"{g}.<name>" for g in groups)]
        raise ValueError(f"unknown placeholder {{{found}}} in {text!r}; "
                         f"allowed: {', '.join('{' + a + '}' for a in allowed)}")
    return text


def render(text: str, values: Mapping[str, str], *, strict: bool = False) -> str:
    """Fill ``{name}`` placeholders from ``values``; a missing one stays as written (so it
    shows in the message) unless ``strict``, where it raises ``KeyError``.

    Each kind of text accepts its own names, checked when the file is loaded:

    - threshold ``annotations``: ``{value}``, ``{metric}``, ``{threshold}``, ``{clear}``,
      ``{labels.<x>}``
    - diagnosis ``probable_cause`` and ``findings``: ``{alert}``, ``{labels.<x>}``,
      ``{annotations.<x>}``
    - playbook ``target`` and string ``parameters``: ``{alert}``, ``{labels.<x>}``
    """

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return values[name]
        if strict:
            raise KeyError(name)
        return match.group(0)

    return PLACEHOLDER.sub(fill, text)


def placeholder_values(**groups: Any) -> dict[str, str]:
    """Flatten ``labels={"host": "a"}`` into ``{"labels.host": "a"}``; scalars stay as named."""
    values: dict[str, str] = {}
    for group, content in groups.items():
        if isinstance(content, Mapping):
            values.update({f"{group}.{k}": str(v) for k, v in content.items()})
        elif content is not None:
            values[group] = format_number(content) if isinstance(content, float) else str(content)
    return values


def format_number(value: float) -> str:
    """Numbers as people write them: 95 rather than 95.0, 93.5 and 1048576 as they are."""
    return str(int(value)) if math.isfinite(value) and value.is_integer() else repr(value)
