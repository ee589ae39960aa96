"""Celery task events from a real worker: none until a monitor enables them (as Flower does),
then every task's events arrive, published in batches rather than one ``PUBLISH`` per event."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from typing import Any

import redis
from celery import Celery

from integration.ops.client import Client
from tests.conftest import wait_for

STEPS = ("task-received", "task-started", "task-succeeded")


class EventTap:
    """Reads the worker's event publishes straight from Redis pub/sub: how many publishes,
    and which task events they carried."""

    def __init__(self, redis_url: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe("*celeryev*")
        self.publishes = 0
        self.events: Counter[tuple[str, str]] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.1)
            if not message or message["type"] != "pmessage":
                continue
            envelope = json.loads(message["data"])
            body = envelope["body"]
            if envelope.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            events = json.loads(body)
            events = events if isinstance(events, list) else [events]
            task_events = [e for e in events if str(e.get("type", "")).startswith("task-")]
            if task_events:
                self.publishes += 1
            for event in task_events:
                self.events[(event.get("uuid", ""), event["type"])] += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.pubsub.close()
        self.client.close()


def _submit(count: int, tag: str) -> list[str]:
    results = Client().submit_many([{"type": "event", "source": "tests/events",
                                     "data": {"n": n, "tag": tag}} for n in range(count)])
    return [result.id for result in results]  # type: ignore[union-attr]


def test_task_events_start_when_a_monitor_enables_them_and_share_publishes(
    redis_url: str, worker: Any, redis_client: redis.Redis
) -> None:
    monitor = Celery(broker=redis_url)
    tap = EventTap(redis_url)
    try:
        time.sleep(0.2)  # subscribed before the first event
        quiet = _submit(10, "before")
        wait_for(lambda: all(redis_client.hget(f"integration:msg:{i}", "status") == b"succeeded"
                             for i in quiet), timeout=30, message="the first messages processed")
        time.sleep(0.3)  # longer than the events' flush delay
        assert not any(uuid in quiet for uuid, _ in tap.events), \
            "task events sent before any monitor asked for them"

        # What Flower does every few seconds (and `celery control enable_events` once).
        replies = monitor.control.enable_events(reply=True, timeout=5)
        assert any(worker.name.replace("%h", "") in name for reply in replies
                   for name in reply), replies
        ids = _submit(40, "after")
        wait_for(lambda: all(tap.events[(i, step)] for i in ids for step in STEPS),
                 timeout=30, message="received, started and succeeded events of every task")
    finally:
        monitor.control.disable_events()
        monitor.close()
        tap.close()
    assert all(tap.events[(i, step)] == 1 for i in ids for step in STEPS), \
        "each event once"
    events = sum(tap.events.values())
    assert tap.publishes * 3 <= events, \
        f"{tap.publishes} publishes for {events} events: not batched"
