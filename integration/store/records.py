"""The status store: one Redis hash per message, its history, time indexes, delivery claims,
parked waits, the outbox and the event log, as one ``StatusStore`` composed of its concerns.

Transitions are Lua scripts (``lua/``) so that the status, its history and the indexes change
together. Needs a single Redis (not Cluster): scripts name keys from their prefixes (``keys``).
"""

from __future__ import annotations

from typing import Any

from integration.store.claims import Claims
from integration.store.ledger import Ledger
from integration.store.outbox import Outbox
from integration.store.reads import Reads
from integration.store.redis_client import redis_client
from integration.store.waits import ParkedWaits


class StatusStore(ParkedWaits, Outbox, Claims, Ledger, Reads):
    """Status, history and listing of messages, kept for ``ttl`` seconds after the last change:
    lifecycle writes and parked waits (``waits``), the outbox, claims, the reconciler's
    ledger and reads, over one client, key prefix and set of scripts (``core``)."""


def store_from_settings(settings: Any) -> StatusStore:
    # No silent retries: a write either lands once or fails to the caller, whose own policy
    # (503 at the gateway, a task retry in the worker) decides what happens next.
    client = redis_client(settings)
    return StatusStore(client, settings.key_prefix, settings.status_ttl_seconds,
                       settings.events_stream_maxlen)
