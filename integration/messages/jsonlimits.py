"""Bounds on parsed JSON: nesting depth, string length, numbers a float or int64 can hold, and
text UTF-8 can encode.

Within them a value is exactly what the store (orjson) and the broker write and read back
unchanged, so every entry refuses what breaks them (422) instead of failing to store it.
Checked iteratively (no recursion), so hostile input is refused in time linear in its size.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

INT64_MAX = 2**63 - 1
_MAX_INT_DIGITS = 19
_MAX_ERRORS = 20
#: A UTF-16 surrogate on its own: JSON's ``"\ud800"`` escape parses to one (the standard
#: parser accepts it), but UTF-8 cannot encode it, so orjson refuses to write it.
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class JsonLimits:
    max_depth: int = 32
    max_string: int = 65_536

    def errors(self, value: Any, loc: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
        """Every place (up to 20) where ``value`` breaks a limit, as 422 error items.

        A valid value (the common case) is cleared by ``_within`` alone. Otherwise containers
        are walked with an explicit stack; a child's location is kept as a link to its
        parent's and spelled out only for an error, and scalars are checked in place.
        """
        max_string, max_depth = self.max_string, self.max_depth
        if _within(value, max_string, max_depth):
            return []
        found: list[dict[str, Any]] = []
        # (container, depth, path): path is (parent path, key), or None at the root.
        stack: list[tuple[Any, int, Any]] = []
        if isinstance(value, dict | list):
            stack.append((value, 0, None))
        else:
            problem = _scalar_problem(value, max_string)
            if problem:
                found.append(_error(loc, *problem))
        while stack and len(found) < _MAX_ERRORS:
            item, depth, path = stack.pop()
            if depth >= max_depth:
                found.append(_error(_spelled(loc, path), f"nested deeper than {max_depth} "
                                    "levels", "too_deep"))
                continue
            children = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in children:
                if isinstance(key, str) and len(key) > max_string:
                    found.append(_error(_spelled(loc, path), "key too long", "string_too_long"))
                elif isinstance(key, str) and _lone_surrogate(key):
                    found.append(_error(_spelled(loc, (path, key)), "key " + _NOT_UTF8,
                                        "string_unicode"))
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1, (path, key)))
                    continue
                if child is None or child is True or child is False:
                    continue
                problem = _scalar_problem(child, max_string)
                if problem:
                    found.append(_error(_spelled(loc, (path, key)), *problem))
        return found[:_MAX_ERRORS]


def _within(value: Any, max_string: int, max_depth: int) -> bool:
    """True when nothing in ``value`` breaks a limit: the common case, checked in half the
    time of ``errors``' walk (no locations, no calls per value). False also for anything
    but the exact types JSON parses to; ``errors`` then decides."""
    stack = [(value, 0)]
    push = stack.append
    while stack:
        item, depth = stack.pop()
        if depth >= max_depth:  # (a scalar root too deep is left for ``errors`` to clear)
            return False
        children: Iterable[Any]
        if type(item) is dict:
            for key in item:
                if type(key) is not str or len(key) > max_string or \
                        not key.isascii() and _SURROGATE.search(key):
                    return False
            children = item.values()
        else:
            children = item if type(item) is list else (item,)  # a scalar at the root
        for child in children:
            kind = type(child)
            if kind is str:
                # Most text is ASCII, which the flag CPython keeps on each string clears.
                if len(child) > max_string or not child.isascii() and _SURROGATE.search(child):
                    return False
            elif kind is dict or kind is list:
                push((child, depth + 1))
            elif kind is float:
                if child - child != 0.0:  # NaN or infinite
                    return False
            elif kind is int:
                if not -INT64_MAX <= child <= INT64_MAX:
                    return False
            elif child is not None and kind is not bool:
                return False
    return True


_NOT_UTF8 = "holds a lone UTF-16 surrogate (\\ud800-\\udfff), which UTF-8 cannot encode"


def _lone_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def _scalar_problem(item: Any, max_string: int) -> tuple[str, str] | None:
    if isinstance(item, str):
        if len(item) > max_string:
            return f"longer than {max_string} characters", "string_too_long"
        if _lone_surrogate(item):
            return _NOT_UTF8, "string_unicode"
    elif isinstance(item, float):
        if not math.isfinite(item):
            return "number out of range (NaN, infinite or too large)", "finite_number"
    elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > INT64_MAX:
        return "integer out of the 64-bit range", "int_range"
    return None


def _spelled(loc: tuple[str | int, ...], path: Any) -> tuple[str | int, ...]:
    keys: list[str | int] = []
    while path is not None:
        path, key = path
        # A key that names the field must itself be writable in the problem document.
        keys.append(_escaped(key) if isinstance(key, str) and _lone_surrogate(key) else key)
    return (*loc, *reversed(keys))


def _escaped(text: str) -> str:
    """``text`` with each lone surrogate spelled as its escape (``\\ud800``)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _error(loc: tuple[str | int, ...], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


def _parse_int(text: str) -> int | float:
    # Converting thousands of digits costs time (and Python caps it); past int64 it is refused
    # anyway, so it becomes infinity and the limits check reports it.
    return int(text) if len(text.lstrip("-")) <= _MAX_INT_DIGITS else math.inf


def loads(body: bytes | str) -> Any:
    """Parse JSON; NaN, Infinity and huge numbers parse to non-finite floats for ``errors``.

    A request body (bytes) is parsed by orjson first, which with its guard takes about half
    the standard library's time. Wherever the two could differ, the standard parser
    decides: for a document orjson refuses (NaN, infinities, numbers past a double, other
    encodings, lone surrogates, and the error message), and for one with a run of 19 or
    more digits, because orjson silently turns integers outside 64 bits into floats, which
    ``errors`` could then not refuse. A long run of digits in a string or in a float's
    decimals only costs the slower parser.
    """
    if isinstance(body, bytes) and _LONG_DIGITS not in body.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body, parse_int=_parse_int, parse_constant=float)


#: Every byte of a body mapped to "0" if it is a digit, else to a space: a run of digits
#: is then found by a substring search (a regular expression takes several times longer).
_DIGITS_AS_ZERO = bytes(ord("0") if ord("0") <= byte <= ord("9") else ord(" ")
                        for byte in range(256))
_LONG_DIGITS = b"0" * _MAX_INT_DIGITS
