"""Consumers for the event-delivery tests, loaded by workers through
INTEGRATION_CONSUMER_MODULES; each records what it consumed in Redis."""

from __future__ import annotations

import os
import time
from typing import Any

from integration.events.consumers import ConsumerContext, consumer
from integration.messages import effects
from integration.messages.retry import RetryPolicy, TransientError
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


@consumer("test.inline.succeeded", name="inline-ok", inline=True)
def inline_ok(event: dict[str, Any], context: ConsumerContext) -> dict[str, Any]:
    """Counts its effect by key and pid; sleeps while ``tests:inline-slow:<subject>`` says."""
    client = _redis()
    key = effects.idempotency_key(context.envelope.id)
    client.hincrby(f"{CONSUMED}:inline-effects:{event['subject']}", key, 1)
    client.rpush(f"{CONSUMED}:inline-pids:{event['subject']}", os.getpid())
    slow = client.get(f"tests:inline-slow:{event['subject']}")
    if slow:
        client.delete(f"tests:inline-slow:{event['subject']}")  # the next run is quick
        time.sleep(float(slow))
    return {"seen": event["subject"], "emitted": context.emit("event", {"by": "inline"})}


@consumer("test.inline.succeeded", name="inline-flaky", inline=True,
          retry=RetryPolicy(max_attempts=4, base_delay_seconds=0.5, max_delay_seconds=0.5,
                            jitter=False))
def inline_flaky(event: dict[str, Any], context: ConsumerContext) -> dict[str, Any]:
    """Fails while ``tests:inline-down`` exists, inline or as a delivery message."""
    client = _redis()
    client.rpush(f"{CONSUMED}:inline-flaky:{event['subject']}", context.envelope.id)
    if client.exists("tests:inline-down"):
        raise TransientError("the inline consumer's downstream is down")
    return {"seen": event["subject"]}


CONSUMERS = [healthy, fragile, emitter, ledger, inline_ok, inline_flaky]
