"""Workers say, every few seconds, that they are alive and which messages they hold.

One Redis hash, a field per worker instance: ``{"until": <ms>, "held": [task ids]}``. A field
whose ``until`` has passed belongs to a worker that died (or stopped beating): what kombu
still records as taken by it counts as lost, and the reconciler sends it again.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

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

    def beat(self, instance: str, held: Iterable[str], ttl: float) -> None:
        until = int((time.time() + ttl) * 1000)
        self.client.hset(self.key, instance,
                         orjson.dumps({"until": until, "held": sorted(held)}).decode())

    def leave(self, instance: str) -> None:
        self.client.hdel(self.key, instance)

    def alive(self) -> Alive:
        """Live workers and what they hold; fields of dead ones are removed."""
        now = time.time() * 1000
        instances: set[str] = set()
        held: set[str] = set()
        dead: list[str] = []
        for name, raw in cast(dict[bytes, bytes], self.client.hgetall(self.key)).items():
            try:
                beat = orjson.loads(raw)
                until, ids = float(beat["until"]), beat["held"]
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                dead.append(name.decode())
                continue
            if until < now:
                dead.append(name.decode())
                continue
            instances.add(name.decode())
            held.update(str(i) for i in ids)
        if dead:
            self.client.hdel(self.key, *dead)
        return Alive(frozenset(instances), frozenset(held))


class Heartbeat:
    """A pass for the worker's loop: beat every ``interval`` seconds with what ``held``
    returns (None: the worker cannot tell now; skip this beat)."""

    batch = 1

    def __init__(self, heartbeats: Heartbeats, instance: str,
                 held: Callable[[], Iterable[str] | None], *, ttl: float) -> None:
        self.heartbeats = heartbeats
        self.instance = instance
        self.held = held
        self.ttl = ttl

    def run_once(self) -> int:
        ids = self.held()
        if ids is not None:
            self.heartbeats.beat(self.instance, ids, self.ttl)
        return 0

    def stop(self) -> None:
        """Leave at shutdown: what this worker still records as taken is lost at once."""
        try:
            self.heartbeats.leave(self.instance)
        except redis.RedisError as exc:
            log.warning("could not remove the heartbeat of %s: %s", self.instance, exc)
