"""A message type whose queue no test worker consumes, so a test can count what was enqueued."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from integration.messages.envelope import Envelope
from integration.messages.registry import MessageType

PARKED_QUEUE = "test.parked"


class Parked(BaseModel):
    n: int = 0


def handle_parked(payload: Parked, envelope: Envelope) -> dict[str, Any]:
    raise AssertionError(f"no worker consumes {PARKED_QUEUE}")


TYPES = [MessageType(PARKED_QUEUE, Parked, handle_parked, "Waits in its queue.")]
