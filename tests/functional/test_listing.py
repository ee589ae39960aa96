"""Listing messages (``StatusStore.list``) against a Redis of its own while messages arrive."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from integration.ops.embedded_redis import EmbeddedRedis
from integration.store.model import NewRecord
from integration.store.records import StatusStore


@pytest.fixture
def client(private_redis: EmbeddedRedis) -> redis.Redis:
    return redis.Redis(port=private_redis.port)


def test_a_listing_read_while_messages_arrive_shows_each_once(client: redis.Redis) -> None:
    """A listing reads its index a page at a time; messages accepted between two pages (with
    higher scores) must not shift the second page onto members already shown."""
    store = StatusStore(client, "t", ttl=600, events_maxlen=100)

    def records(prefix: str, kind: str, count: int) -> list[NewRecord]:
        return [NewRecord(id=f"{prefix}{n:03d}", type=kind, queue=f"q-{kind}", owner="alice",
                          channel="rest", envelope={"id": f"{prefix}{n:03d}"})
                for n in range(count)]

    store.create_many(records("e", "event", 40))  # oldest: what the listing looks for
    store.create_many(records("m", "metric", 60))  # newer: skipped by the type filter
    pages = 0
    read_page = store.client.zrevrangebyscore

    def arriving(*args: Any, **kwargs: Any) -> Any:
        nonlocal pages
        pages += 1
        page = read_page(*args, **kwargs)
        if pages == 1:  # five messages accepted while the first page is being looked at
            store.create_many(records("n", "metric", 5))
        return page

    store.client.zrevrangebyscore = arriving  # type: ignore[method-assign]
    found, _ = store.list(status="accepted", type="event", limit=20)
    ids = [item["id"] for item in found]
    assert pages == 2, "the listing should need a second page"
    assert len(ids) == len(set(ids)) == 20, ids
    assert ids == [f"e{n:03d}" for n in range(39, 19, -1)]
