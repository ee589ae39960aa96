"""Lua scripts run by SHA inside pipelines, reloaded when Redis has forgotten them.

redis-py's ``Script`` objects send ``SCRIPT EXISTS`` before every pipeline that holds one: a
round trip per pipeline on the paths that exist to save round trips. These paths call
``EVALSHA`` themselves and, after a Redis restart or ``SCRIPT FLUSH`` (``NOSCRIPT``), load the
scripts and run the pipeline once more, which is safe because a script that was not found ran
nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import redis

T = TypeVar("T")


def execute_loading(client: redis.Redis, scripts: Iterable[str], execute: Callable[[], T]) -> T:
    """``execute()`` (which builds and runs a fresh pipeline); on ``NOSCRIPT``, ``scripts``
    are loaded and it runs once more."""
    try:
        return execute()
    except redis.exceptions.NoScriptError:
        for script in scripts:
            client.script_load(script)
        return execute()
