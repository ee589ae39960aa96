"""A bounded in-process memory: per-process answers kept to save a round trip or a decode."""

from __future__ import annotations

import contextlib
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(memory: dict[K, V], key: K, value: V, limit: int) -> None:
    """Store ``value`` under ``key``, first dropping the oldest entry when ``limit`` is
    reached (dicts keep insertion order); safe against concurrent writers."""
    if len(memory) >= limit:
        # Another thread may empty or change the dict meanwhile: then there is room anyway.
        with contextlib.suppress(StopIteration, RuntimeError, KeyError):
            del memory[next(iter(memory))]
    memory[key] = value
