"""Lua scripts run by SHA inside pipelines, reloaded when Redis has forgotten them; and
scripts a worker runs once per delivery, called on connections of their own.

redis-py's ``Script`` objects send ``SCRIPT EXISTS`` before every pipeline that holds one: a
round trip per pipeline on the paths that exist to save round trips. These paths call
``EVALSHA`` themselves and, after a Redis restart or ``SCRIPT FLUSH`` (``NOSCRIPT``), load the
scripts and run the pipeline once more, which is safe because a script that was not found ran
nothing.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import redis
from redis.commands.core import Script
from redis.connection import AbstractConnection
from redis.sentinel import SentinelManagedConnection

T = TypeVar("T")


class ReplyLost(redis.exceptions.ConnectionError):
    """The commands were sent whole, and the connection failed before their replies came:
    whether they ran is unknown (a transaction ran entirely or not at all)."""


def execute_loading(client: redis.Redis, scripts: Iterable[str], execute: Callable[[], T]) -> T:
    """``execute()`` (which builds and runs a fresh pipeline); on ``NOSCRIPT``, ``scripts``
    are loaded and it runs once more."""
    try:
        return execute()
    except redis.exceptions.NoScriptError:
        for script in scripts:
            client.script_load(script)
        return execute()


class OwnConnectionScript:
    """A script called on connections of its own, not through redis-py's client.

    A call through the client costs about as much CPU as the round trip itself on a short
    script: the pool's fork check, its ``poll`` for
    pending data before every command, connection metrics and argument wrappers. A worker's
    delivery makes two such calls, so they are made here directly: ``EVALSHA`` on an idle
    connection kept beside the client's pool (its address, credentials and timeouts), and
    on ``NOSCRIPT`` the script's text, which ran nothing the first time.

    What the client gave stays true: a connection that failed is closed, never reused with
    a reply pending; one the server closed while it sat idle is replaced, and so is one
    idle longer than the client's health-check interval (rather than pinged); none crosses
    a fork. No retries, as the client is configured: a failure goes to the caller. Within
    a pipeline (``client=``), redis-py's script is used.
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self._connections = own_connections(script.registered_client)

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (),
                 client: Any = None) -> Any:
        if client is not None:
            return self.script(keys=keys, args=args, client=client)
        try:
            return self._connections.execute("EVALSHA", self.script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return self._connections.execute("EVAL", self.script.script, len(keys), *keys,
                                             *args)


class OwnConnections:
    """The idle connections kept beside one client's pool, with when each was last used
    (list operations are atomic, so threads need no lock): for ``OwnConnectionScript``, a
    plain command made once per delivery, and the gateway's enqueue transaction and
    rate-limit hits (``pipeline``)."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        # What the pool's connections are made of, not the pool: this object lives as long as
        # the pool (it is the pool's value in a weak mapping), so it must not keep it alive.
        connection_class, kwargs = pool.connection_class, pool.connection_kwargs
        self._connect = lambda: connection_class(**kwargs)
        interval = kwargs.get("health_check_interval") or 0
        self._max_idle = float(interval) if interval else float("inf")
        self._idle: list[tuple[AbstractConnection, float]] = []

    def execute(self, *command: Any) -> Any:
        """``command``'s reply, on an idle connection (see ``OwnConnectionScript``)."""
        return self.pipeline([command])[0]

    def pipeline(self, commands: Sequence[Sequence[Any]], *,
                 transaction: bool = False) -> list[Any]:
        """The replies of ``commands``, sent in one write on an idle connection (inside
        ``MULTI``/``EXEC`` with ``transaction``): redis-py's pipeline without its per-call
        costs (see ``OwnConnectionScript``). As
        redis-py's does, it reads every reply before it raises the first error, so the
        connection stays usable (one that failed otherwise is closed, never reused with a
        reply pending); in a transaction, a command Redis refused while queueing (which
        aborts the ``EXEC``) is the error raised."""
        sent = [("MULTI",), *commands, ("EXEC",)] if transaction else commands
        connection = self._take()
        replies: list[Any] = []
        written = False
        try:
            connection.send_packed_command(connection.pack_commands(sent), check_health=False)
            written = True
            for _ in sent:
                try:
                    replies.append(connection.read_response())
                except redis.exceptions.ResponseError as exc:
                    replies.append(exc)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                OSError) as exc:
            connection.disconnect()  # replies may still be on their way
            # A server still loading its data answered, and ran nothing.
            if written and not isinstance(exc, redis.exceptions.BusyLoadingError):
                raise ReplyLost(f"no reply after the commands were sent: {exc}") from exc
            raise
        except BaseException:
            connection.disconnect()
            raise
        self._give_back(connection)
        if transaction:
            queued, executed = replies[1:-1], replies[-1]
            for reply in queued:
                if isinstance(reply, redis.exceptions.ResponseError):
                    raise reply
            if isinstance(executed, redis.exceptions.ResponseError):
                raise executed  # hiredis raises an array's first element when it is an error
            replies = list(executed)
        for reply in replies:
            if isinstance(reply, redis.exceptions.ResponseError):
                raise reply
        return replies

    def _take(self) -> AbstractConnection:
        """An idle connection fit to use, or a new one. One that sat idle a while is first
        checked for an end the server sent meanwhile (a restart, a client timeout), as the
        client's pool checks before every command; under load (back within a second) that
        ``poll`` is skipped."""
        while True:
            try:
                connection, since = self._idle.pop()
            except IndexError:
                return self._new()
            idle = time.monotonic() - since
            try:
                if idle <= _RECHECK_AFTER or (idle <= self._max_idle
                                              and not connection.can_read()):
                    return connection
            except (redis.exceptions.ConnectionError, OSError):
                pass
            connection.disconnect()

    def _new(self) -> AbstractConnection:
        """A new connection. A Sentinel-managed one is connected here, through the
        ``connect`` that asks the sentinels for the master, as its pool would: its first send
        would otherwise connect to its default address. Others connect on that send."""
        connection = self._connect()
        if isinstance(connection, SentinelManagedConnection):
            connection.connect()
        return connection

    def _give_back(self, connection: AbstractConnection) -> None:
        self._idle.append((connection, time.monotonic()))

    def forget(self) -> None:
        """After a fork: the parent's connections are the parent's."""
        self._idle = []


#: How long a connection may sit idle before it is checked for an end the server sent.
_RECHECK_AFTER = 1.0

#: The own connections of each client's pool; a forked child forgets them all.
_OWN_CONNECTIONS: weakref.WeakKeyDictionary[redis.ConnectionPool, OwnConnections] = \
    weakref.WeakKeyDictionary()


def own_connections(client: redis.Redis) -> OwnConnections:
    """The own connections of ``client``'s pool, shared by everything that uses that pool."""
    pool = client.connection_pool
    connections = _OWN_CONNECTIONS.get(pool)
    if connections is None:
        connections = _OWN_CONNECTIONS.setdefault(pool, OwnConnections(pool))
    return connections


def _after_fork_in_child() -> None:
    for connections in list(_OWN_CONNECTIONS.values()):
        connections.forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
