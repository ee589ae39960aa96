"""Bounds on parsed JSON: nesting depth, string length, and numbers a float or int64 can hold.

Checked iteratively (no recursion), so hostile input is refused in time linear in its size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

INT64_MAX = 2**63 - 1
_MAX_INT_DIGITS = 19
_MAX_ERRORS = 20


@dataclass(frozen=True)
class JsonLimits:
    max_depth: int = 32
    max_string: int = 65_536

    def errors(self, value: Any, loc: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
        """Every place (up to 20) where ``value`` breaks a limit, as 422 error items."""
        found: list[dict[str, Any]] = []
        stack: list[tuple[Any, tuple[str | int, ...], int]] = [(value, loc, 0)]
        while stack and len(found) < _MAX_ERRORS:
            item, where, depth = stack.pop()
            if isinstance(item, dict | list):
                if depth >= self.max_depth:
                    found.append(_error(where, f"nested deeper than {self.max_depth} levels",
                                        "too_deep"))
                    continue
                children = item.items() if isinstance(item, dict) else enumerate(item)
                for key, child in children:
                    if isinstance(key, str) and len(key) > self.max_string:
                        found.append(_error(where, "key too long", "string_too_long"))
                    stack.append((child, (*where, key), depth + 1))
            elif isinstance(item, str):
                if len(item) > self.max_string:
                    found.append(_error(where, f"longer than {self.max_string} characters",
                                        "string_too_long"))
            elif isinstance(item, float):
                if not math.isfinite(item):
                    found.append(_error(where, "number out of range (NaN, infinite or too "
                                        "large)", "finite_number"))
            elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > INT64_MAX:
                found.append(_error(where, "integer out of the 64-bit range", "int_range"))
        return found


def _error(loc: tuple[str | int, ...], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


def _parse_int(text: str) -> int | float:
    # Converting thousands of digits costs time (and Python caps it); past int64 it is refused
    # anyway, so it becomes infinity and the limits check reports it.
    return int(text) if len(text.lstrip("-")) <= _MAX_INT_DIGITS else math.inf


def loads(body: bytes | str) -> Any:
    """Parse JSON; NaN, Infinity and huge numbers parse to non-finite floats for ``errors``."""
    return json.loads(body, parse_int=_parse_int, parse_constant=float)
