"""Workers say, every few seconds, that they are alive, which messages they hold and which
queues they consume.

One Redis hash, a field per worker instance: ``{"until": <ms>, "held": [task ids], "queues":
[names]}``. A field whose ``until`` has passed belongs to a worker that died (or stopped
beating): what kombu still records as taken by it counts as lost, and the reconciler sends it
again; its queues no longer count as consumed.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis

from integration.messages.envelope import new_id

log = logging.getLogger(__name__)


def instance_name() -> str:
    """This worker process's name: host, pid and a random part (a restarted worker with
    the same pid is another instance)."""
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"


@dataclass(frozen=True)
class Alive:
    """The live workers and every message id they hold."""

    instances: frozenset[str]
    held: frozenset[str]


class Heartbeats:
    """The hash of worker heartbeats in the store's Redis."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.key = f"{prefix}:workers"

    def beat(self, instance: str, held: Iterable[str], ttl: float,
             queues: Iterable[str] = ()) -> None:
        until = int((time.time() + ttl) * 1000)
        self.client.hset(self.key, instance, orjson.dumps(
            {"until": until, "held": sorted(held), "queues": sorted(queues)}).decode())

    def leave(self, instance: str) -> None:
        self.client.hdel(self.key, instance)

    def _live(self) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """The beats of live workers by instance, and the fields of dead (or unreadable) ones."""
        now = time.time() * 1000
        live: dict[str, dict[str, Any]] = {}
        dead: list[str] = []
        for name, raw in cast(dict[bytes, bytes], self.client.hgetall(self.key)).items():
            try:
                beat = orjson.loads(raw)
                if float(beat["until"]) >= now and isinstance(beat["held"], list):
                    live[name.decode()] = beat
                    continue
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                pass
            dead.append(name.decode())
        return live, dead

    def alive(self) -> Alive:
        """Live workers and what they hold; fields of dead ones are removed."""
        live, dead = self._live()
        if dead:
            self.client.hdel(self.key, *dead)
        return Alive(frozenset(live),
                     frozenset(str(i) for beat in live.values() for i in beat["held"]))

    def live(self) -> dict[str, dict[str, Any]]:
        """The last beat of each live worker, by instance (read only)."""
        return self._live()[0]

    def consumers(self) -> dict[str, int]:
        """How many live workers consume each queue they named in their last beat (read
        only: the reconciler's ``alive`` removes dead fields)."""
        live, _ = self._live()
        counted: Counter[str] = Counter()
        for beat in live.values():
            queues = beat.get("queues")
            if isinstance(queues, list):
                counted.update({str(q) for q in queues})
        return dict(counted)


class Heartbeat:
    """A pass for the worker's loop: beat every ``interval`` seconds with what ``held``
    returns (None: the worker cannot tell now; skip this beat) and the queues ``queues``
    names now (a worker may be told to consume more, or fewer, while it runs)."""

    batch = 1

    def __init__(self, heartbeats: Heartbeats, instance: str,
                 held: Callable[[], Iterable[str] | None], *, ttl: float,
                 queues: Callable[[], Iterable[str]] = tuple) -> None:
        self.heartbeats = heartbeats
        self.instance = instance
        self.held = held
        self.queues = queues
        self.ttl = ttl

    def run_once(self) -> int:
        ids = self.held()
        if ids is not None:
            self.heartbeats.beat(self.instance, ids, self.ttl, self.queues())
        return 0

    def stop(self) -> None:
        """Leave at shutdown: what this worker still records as taken is lost at once."""
        try:
            self.heartbeats.leave(self.instance)
        except redis.RedisError as exc:
            log.warning("could not remove the heartbeat of %s: %s", self.instance, exc)
