"""Which delivery is running here, and the ``Idempotency-Key`` its effects carry downstream.

A redelivery of the same generation is the same intent (same key); a replay from the dead
letters is a new generation, so a new intent (a new key).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Running:
    """The message and delivery generation whose handler runs in this context."""

    message_id: str
    generation: int

    @property
    def idempotency_key(self) -> str:
        """``<message id>:<generation>``; the generation is what follows the last colon."""
        return f"{self.message_id}:{self.generation}"


_running: ContextVar[Running | None] = ContextVar("integration_running", default=None)


def current() -> Running | None:
    """The delivery running in this context, if a worker is running one."""
    return _running.get()


def idempotency_key(message_id: str) -> str:
    """The key for an effect of ``message_id``: its running generation's, or generation 1
    outside a worker (a handler called directly, as in tests)."""
    running = _running.get()
    if running is not None and running.message_id == message_id:
        return running.idempotency_key
    return Running(message_id, 1).idempotency_key


@contextmanager
def running(message_id: str, generation: int) -> Iterator[Running]:
    """Mark ``(message_id, generation)`` as the delivery running in this context."""
    current_run = Running(message_id, generation)
    token = _running.set(current_run)
    try:
        yield current_run
    finally:
        _running.reset(token)
