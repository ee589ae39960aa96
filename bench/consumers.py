"""The consumer of the end-to-end figure with a subscriber: takes every ``event`` result."""

from __future__ import annotations

from typing import Any

from integration.consumers import ConsumerContext, consumer


@consumer("event.succeeded", name="bench-sink")
def sink(event: dict[str, Any], context: ConsumerContext) -> dict[str, Any]:
    """Consume the result event and do nothing else."""
    return {"seen": event.get("id")}


CONSUMERS = [sink]
