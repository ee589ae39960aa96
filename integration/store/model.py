"""What the store takes and gives: new records, idempotent answers, delivery states, ledger
entries and the outcomes of its steps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson

from integration.messages.status import Status


@dataclass(frozen=True)
class NewRecord:
    """What the store needs to create a message's status record."""

    id: str
    type: str
    queue: str
    envelope: Mapping[str, Any]
    owner: str
    channel: str
    status: Status = Status.ACCEPTED

    @cached_property
    def envelope_json(self) -> str:
        """The envelope as stored and as sent in the broker message (encoded once)."""
        return orjson.dumps(self.envelope).decode()


@dataclass(frozen=True)
class IdempotentAnswer:
    """An idempotency key to complete with ``value`` (kept ``ttl`` seconds) once the
    request's message is enqueued."""

    key: str
    value: str
    ttl: int
    #: The key was not reserved beforehand: the transaction takes it only if it is free, and
    #: otherwise enqueues nothing and reports what the key holds (``EarlierAnswer``).
    claim: bool = False


@dataclass(frozen=True)
class EarlierAnswer:
    """What an idempotency key held when a claiming transaction found it taken."""

    value: str


@dataclass(frozen=True)
class DeliveryState:
    status: str | None
    generation: int
    released: bool
    channel: str
    accepted: float | None  # epoch seconds
    queued: float | None
    owner: str = "direct"


@dataclass(frozen=True)
class InlineDelivery:
    """A delivery that ran in the worker that finished its cause: what its record keeps
    (its envelope names the event by id rather than carrying it)."""

    id: str
    type: str
    queue: str
    envelope: Mapping[str, Any]
    result: Mapping[str, Any]


@dataclass(frozen=True)
class LedgerEntry:
    """What the reconciler reads of a record that is not final."""

    id: str
    type: str
    status: str
    generation: int
    queue: str
    updated_at: str
    updated_ms: int
    task_id: str  # the Celery task id of the last delivery that started ('' before one)


@dataclass(frozen=True)
class Transition:
    """The outcome of a transition: whether it applied, the status it found, the attempts."""

    applied: bool
    previous: str | None
    attempts: int = 0


@dataclass(frozen=True)
class Begun:
    """What a delivery's first step found and did (``StatusStore.begin``)."""

    state: DeliveryState | None  # None: the message has no record
    claimed: bool = False
    claim_remaining: float = 0.0  # seconds, when another delivery holds the claim
    started: Transition | None = None  # the move to processing, when asked for and claimed


class ClaimLost(Exception):
    """A delivery's write was refused: its claim lapsed, and another delivery may have taken
    the message over (the fence). Nothing was written; ``status`` is the record's now."""

    def __init__(self, message_id: str, generation: int, status: str | None,
                 refused: str = "") -> None:
        super().__init__(f"the claim of {message_id} (generation {generation}) is no longer "
                         "held by this delivery")
        self.message_id = message_id
        self.generation = generation
        self.status = status
        self.refused = refused  # the status the refused write would have set
