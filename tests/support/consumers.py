"""Consumers for the event-delivery tests, loaded by workers through
INTEGRATION_CONSUMER_MODULES; each records what it consumed in Redis."""

from __future__ import annotations

import time
from typing import Any

from integration.consumers import ConsumerContext, consumer
from integration.retry import RetryPolicy, TransientError
from tests.support.fault_types import _redis

CONSUMED = "tests:consumed"


@consumer("test.produce.succeeded", name="healthy")
def healthy(event: dict[str, Any], context: ConsumerContext) -> dict[str, Any]:
    """Records the event at once."""
    _redis().rpush(f"{CONSUMED}:healthy", f"{event['subject']} {time.time():.3f}")
    return {"seen": event["subject"]}


@consumer("test.produce.succeeded", name="fragile",
          retry=RetryPolicy(max_attempts=4, base_delay_seconds=1.0, max_delay_seconds=1.0,
                            jitter=False))
def fragile(event: dict[str, Any], context: ConsumerContext) -> dict[str, Any]:
    """Fails while ``tests:consumer-down`` exists, then records the event."""
    client = _redis()
    client.incr(f"{CONSUMED}:fragile-attempts:{event['subject']}")
    if client.exists("tests:consumer-down"):
        raise TransientError("the fragile consumer's downstream is down")
    client.rpush(f"{CONSUMED}:fragile", f"{event['subject']} {time.time():.3f}")
    return {"seen": event["subject"]}


@consumer("test.produce.dead", name="emitter")
def emitter(event: dict[str, Any], context: ConsumerContext) -> dict[str, Any]:
    """Emits an ``event`` message for each dead ``test.produce`` (twice: one is a repeat)."""
    first = context.emit("event", {"dead": event["subject"]})
    again = context.emit("event", {"dead": event["subject"]})
    return {"emitted": first, "same": first == again}


@consumer("test.produce.dead", "test.produce.succeeded", name="ledger")
def ledger(event: dict[str, Any], context: ConsumerContext) -> dict[str, Any]:
    """Records each outcome of a message, in order."""
    _redis().rpush(f"{CONSUMED}:ledger:{event['subject']}", event["type"])
    return {"seen": event["type"]}


CONSUMERS = [healthy, fragile, emitter, ledger]
