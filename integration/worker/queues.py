"""The queues as the whole cluster sees them: how many live workers consume each, and how long
the message next out of each has waited."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from integration.broker.holdings import RedisHoldings

if TYPE_CHECKING:
    from integration.broker.publisher import Publisher
    from integration.store.records import StatusStore


class QueueAges:
    """Seconds the oldest waiting message of each queue has waited: 0 for an empty queue; a
    queue whose next messages have no status record (sent by something other than the
    service) is left out. The time is the record's, when the message was last queued."""

    def __init__(self, holdings: RedisHoldings, queued_at: Callable[[str], float | None],
                 clock: Callable[[], float] = time.time) -> None:
        self.holdings = holdings
        self.queued_at = queued_at
        self.clock = clock

    def __call__(self, queues: Sequence[str]) -> dict[str, float]:
        now = self.clock()
        ages: dict[str, float] = {}
        for queue, ids in self.holdings.next_out(queues).items():
            if not ids:
                ages[queue] = 0.0
                continue
            times = [at for at in map(self.queued_at, ids) if at is not None]
            if times:
                ages[queue] = max(0.0, now - min(times))
        return ages


def queue_ages_of(publisher: Publisher, store: StatusStore) -> QueueAges | None:
    """Ages read from the broker's Redis; None on RabbitMQ, whose queues cannot be read
    without taking their messages (``integration_queue_oldest_age_seconds`` is not exported)."""
    client = publisher.redis_client
    if client is None:
        return None

    def queued_at(message_id: str) -> float | None:
        state = store.delivery_state(message_id)
        return (state.queued or state.accepted) if state.status else None

    return QueueAges(RedisHoldings(client), queued_at)


def unconsumed(depths: Mapping[str, int], consumers: Mapping[str, int]) -> dict[str, int]:
    """The queues holding messages that no live worker consumes, with how many wait."""
    return {queue: depth for queue, depth in depths.items()
            if depth and not consumers.get(queue)}
