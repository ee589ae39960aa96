"""What the broker holds, as the reconciler sees it: message ids in queues, and on Redis the
unacknowledged deliveries that kombu keeps for its consumers (``unacked``).

On Redis the reconciler reads kombu's own keys and layout (the queue lists, the ``unacked``
hash of ``[message, exchange, routing key]`` and its ``unacked_index`` of delivery times),
named from kombu's channel class; ``tests/functional/test_reconciler.py`` fails when they
move. On RabbitMQ a queue cannot be searched: a queue that holds any message is trusted to
hold a message recorded as queued (RabbitMQ keeps what it confirmed, and returns a lost
consumer's deliveries to the queue itself).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import redis

from integration.broker.kombu_redis import Channel
from integration.broker.publisher import Publisher

#: A Celery message's task id: the first ``"id"`` key of its JSON, in the headers (the body
#: before them is base64, with no quotes inside).
_TASK_ID = re.compile(rb'"id": ?"((?:[^"\\]|\\.)*)"')
_PAGE = 1000


def task_id_of(raw: bytes) -> str | None:
    match = _TASK_ID.search(raw)
    return match.group(1).decode("utf-8", "replace") if match else None


@dataclass(frozen=True)
class Unacked:
    """A delivery kombu recorded as taken by a consumer and not yet acknowledged."""

    tag: str
    task_id: str
    delivered_at: float  # epoch seconds


class Holdings(Protocol):
    #: Whether ``in_queues`` finds each message (Redis), or only says whether a queue holds
    #: anything (RabbitMQ).
    exact: bool

    def in_queues(self, by_queue: Mapping[str, set[str]]) -> set[str]:
        """Which of the ids wait in a queue (``by_queue``: the ids each queue should hold)."""

    def unacked(self) -> list[Unacked]:
        """Every delivery taken and not acknowledged."""

    def drop(self, entries: Sequence[Unacked]) -> None:
        """Forget deliveries whose consumer is gone (the message was sent again, or is
        finished), so the broker does not restore a copy later."""


class RedisHoldings:
    """The broker's Redis database, read as kombu's Redis transport lays it out."""

    exact = True

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def _keys_of(self, queue: str) -> list[str]:
        """The lists of a queue: its own, and one per non-zero priority step."""
        return [queue, *(f"{queue}{Channel.sep}{step}" for step in Channel.priority_steps
                         if step)]

    def in_queues(self, by_queue: Mapping[str, set[str]]) -> set[str]:
        # Read from the head: a push there shifts unread entries further in (read twice,
        # never missed); consumers pop at the tail.
        ids = set().union(*by_queue.values())
        found: set[str] = set()
        for queue in by_queue:
            for key in self._keys_of(queue):
                start = 0
                while True:
                    page = cast(list[bytes], self.client.lrange(key, start, start + _PAGE - 1))
                    for raw in page:
                        task_id = task_id_of(raw)
                        if task_id in ids:
                            found.add(task_id)
                    if len(page) < _PAGE:
                        break
                    start += _PAGE
        return found

    def next_out(self, queues: Sequence[str]) -> dict[str, list[str]]:
        """The task ids next out of each queue, one per list (its own and each priority
        step's), without taking them: the tail, where consumers pop. One round trip."""
        keys = [(queue, key) for queue in queues for key in self._keys_of(queue)]
        pipe = self.client.pipeline(transaction=False)
        for _, key in keys:
            pipe.lindex(key, -1)
        found: dict[str, list[str]] = {queue: [] for queue in queues}
        for (queue, _), raw in zip(keys, pipe.execute(), strict=True):
            task_id = task_id_of(raw) if raw else None
            if task_id:
                found[queue].append(task_id)
        return found

    def unacked(self) -> list[Unacked]:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(Channel.unacked_key)
        pipe.zrange(Channel.unacked_index_key, 0, -1, withscores=True)
        entries, index = pipe.execute()
        delivered = {tag.decode(): score for tag, score in index}
        found = []
        for tag, raw in cast(dict[bytes, bytes], entries).items():
            task_id = task_id_of(raw)
            name = tag.decode()
            if task_id is not None:
                found.append(Unacked(name, task_id, delivered.get(name, 0.0)))
        return found

    def drop(self, entries: Sequence[Unacked]) -> None:
        if not entries:
            return
        tags = [entry.tag for entry in entries]
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(Channel.unacked_key, *tags)
        pipe.zrem(Channel.unacked_index_key, *tags)
        pipe.execute()


def holdings_of(publisher: Publisher) -> Holdings:
    """What the publisher's broker holds: searched on Redis, by depth elsewhere."""
    client = publisher.redis_client
    if client is not None:
        return RedisHoldings(client)
    return QueueDepthHoldings(publisher.queue_depths)


class QueueDepthHoldings:
    """A broker whose queues cannot be searched (RabbitMQ): a queue holding anything is
    trusted to hold what was recorded as queued in it; lost consumers' deliveries go back to
    their queue by the broker itself."""

    exact = False

    def __init__(self, depths: Callable[[Sequence[str]], dict[str, int]]) -> None:
        self.depths = depths

    def in_queues(self, by_queue: Mapping[str, set[str]]) -> set[str]:
        depths = self.depths(sorted(by_queue))
        return set().union(*(ids for queue, ids in by_queue.items() if depths.get(queue)))

    def unacked(self) -> list[Unacked]:
        return []

    def drop(self, entries: Sequence[Unacked]) -> None:
        return None
