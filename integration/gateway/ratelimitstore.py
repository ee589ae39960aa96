"""Flask-Limiter's Redis storage (from ``limits``), with the hits of concurrent requests of a
gateway process sent to Redis together.

Every API request counts one hit against its subject's budget, one Lua script call each.
Under load, the requests that arrive while one hit is on the wire queue up behind it and go
together in the next pipelined round trip (``integration.coalescer``), so a busy process
makes one round trip per batch of hits instead of one per request, on connections kept
beside the client's pool (``OwnConnections``), without redis-py's per-call costs. Each hit is
still its own script call with its own answer, run by Redis in arrival order: the counting
is the library's, unchanged.

``limits`` has no public way to send hits together, so this uses ``RedisStorage``'s scripts
and key helpers: pinned in ``setup.cfg``, checked by ``tests/unit/test_library_internals.py``
(docs/decisions/0008-library-internals.md says why).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

import redis
from limits.storage import RedisSentinelStorage, RedisStorage

from integration.broker.coalescer import Coalescer
from integration.store.connections import execute_loading, own_connections

#: ``limits`` picks a storage class by the URI's scheme.
SCHEME_PREFIX = "integration+"

#: One script call: (script, keys, args).
Call = tuple[Any, list[Any], list[Any]]


class _Coalesced:
    """The hits of ``RedisStorage`` (or its Sentinel subclass), sent together."""

    get_connection: Any
    prefixed_key: Any
    _previous_window_key: Any
    _current_window_key: Any
    lua_acquire_sliding_window: Any
    lua_acquire_moving_window: Any
    lua_incr_expire: Any

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri.removeprefix(SCHEME_PREFIX), **options)  # type: ignore[call-arg]
        self._calls: Coalescer[Call, Any] = Coalescer(self._run, max_size=256)

    def _run(self, calls: Sequence[Call]) -> list[Any]:
        """The calls' replies, in order, from one pipelined round trip."""
        client = cast(redis.Redis, self.get_connection())
        commands = [("EVALSHA", script.sha, len(keys), *keys, *args)
                    for script, keys, args in calls]

        def execute() -> list[Any]:
            return own_connections(client).pipeline(commands)

        return execute_loading(client, {script.script for script, _, _ in calls}, execute)

    def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int,
                                     amount: int = 1) -> bool:
        previous_key = self.prefixed_key(self._previous_window_key(key))
        current_key = self.prefixed_key(self._current_window_key(key))
        return bool(self._calls.run((self.lua_acquire_sliding_window,
                                     [previous_key, current_key], [limit, expiry, amount])))

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return bool(self._calls.run((self.lua_acquire_moving_window, [self.prefixed_key(key)],
                                     [time.time(), limit, expiry, amount])))

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return int(self._calls.run((self.lua_incr_expire, [self.prefixed_key(key)],
                                    [expiry, amount])))

    def window_keys(self, strategy: str, key: str) -> tuple[str, ...]:
        """Where the hits above count ``key`` (a limit's ``key_for``) under ``strategy``:
        the current window's Redis key, then for a sliding window the previous one's."""
        if strategy == "sliding-window-counter":
            return (self.prefixed_key(self._current_window_key(key)),
                    self.prefixed_key(self._previous_window_key(key)))
        return (self.prefixed_key(key),)


class CoalescedRedisStorage(_Coalesced, RedisStorage):
    STORAGE_SCHEME = [f"{SCHEME_PREFIX}redis", f"{SCHEME_PREFIX}rediss"]


class CoalescedRedisSentinelStorage(_Coalesced, RedisSentinelStorage):
    """The same, on the master that the sentinels name."""

    STORAGE_SCHEME = [f"{SCHEME_PREFIX}redis+sentinel"]


#: A storage whose hits this module sends, and whose keys it can name.
CoalescedStorage = (CoalescedRedisStorage, CoalescedRedisSentinelStorage)


def coalesced_uri(redis_url: str) -> str:
    """The storage URI that selects ``CoalescedRedisStorage`` for a Redis URL."""
    return SCHEME_PREFIX + redis_url \
        if redis_url.startswith(("redis://", "rediss://", "redis+sentinel://")) else redis_url
