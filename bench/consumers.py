"""The consumers of the end-to-end figures with a subscriber: each takes every ``event``
result; one is delivered as a message of its own, the other runs inline."""

from __future__ import annotations

from typing import Any

from integration.events.consumers import ConsumerContext, consumer


@consumer("event.succeeded", name="bench-sink")
def sink(event: dict[str, Any], context: ConsumerContext) -> dict[str, Any]:
    """Consume the result event and do nothing else (a delivery message of its own)."""
    return {"seen": event.get("id")}


@consumer("event.succeeded", name="bench-inline", inline=True)
def inline_sink(event: dict[str, Any], context: ConsumerContext) -> dict[str, Any]:
    """Consume the result event and do nothing else (in the worker that finished it)."""
    return {"seen": event.get("id")}


CONSUMERS = [sink]
INLINE = [inline_sink]
