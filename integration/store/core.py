"""What every part of the status store stands on: the Redis client, the key names, the
retention, and the Lua scripts registered once per store."""

from __future__ import annotations

from typing import Any

import redis

from integration.store.codec import now_ms
from integration.store.connections import OwnConnectionScript, own_connections
from integration.store.keys import Keys
from integration.store.model import NewRecord
from integration.store.scripts import store_script


class StoreCore:
    """Status, history and listing of messages, kept for ``ttl`` seconds after the last
    change: the state and scripts the store's concerns (``integration.store.records``)
    share."""

    def __init__(self, client: redis.Redis, prefix: str, ttl: int, events_maxlen: int) -> None:
        self.client = client
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.ttl = ttl
        self.events_maxlen = events_maxlen
        self._create = client.register_script(store_script("create"))
        # The scripts a worker's delivery runs on their own (not in a pipeline) use their
        # own connections: half the client-side CPU of a call through the client.
        self._transition = OwnConnectionScript(
            client.register_script(store_script("transition")))
        self._discard = client.register_script(store_script("discard"))
        self._take_due = OwnConnectionScript(client.register_script(store_script("take_due")))
        self._release_due = OwnConnectionScript(
            client.register_script(store_script("release_due")))
        # For the outbox clearing of each consumed event.
        self._own = own_connections(client)
        self._replay = client.register_script(store_script("replay"))
        self._begin = OwnConnectionScript(client.register_script(store_script("begin")))
        self._renew_claim = OwnConnectionScript(
            client.register_script(store_script("renew_claim")))
        self._redeliver = client.register_script(store_script("redeliver"))
        self._finish = OwnConnectionScript(client.register_script(store_script("finish")))

    @property
    def events_key(self) -> str:
        return self.keys.events

    @property
    def outbox_key(self) -> str:
        return self.keys.outbox

    @property
    def due_key(self) -> str:
        return self.keys.due

    def cutoff(self, at_ms: int) -> int:
        """The acceptance time before which index entries are trimmed."""
        return at_ms - self.ttl * 1000

    def cause_links(self, record: NewRecord) -> list[tuple[Any, ...]]:
        """Who caused whom, for traces that follow a chain (metric -> alert -> ...): the
        commands that note ``record`` under its cause."""
        caused = self.caused_key(record)
        if not caused:
            return []
        return [("SADD", caused, record.id), ("EXPIRE", caused, self.ttl)]

    def caused_key(self, record: NewRecord) -> str:
        """The set of what ``record``'s cause caused, or '' when it names none."""
        cause = record.envelope.get("causationid")
        if not isinstance(cause, str) or cause == record.id:
            return ""
        return self.keys.caused(cause)

    def _take_leased(self, key: str, limit: int, lease_seconds: float) -> tuple[int, list[str]]:
        """Up to ``limit`` members of the due-time set ``key`` whose time has come, leased to
        the caller until the returned score."""
        lease, ids = self._take_due(keys=[key], args=[now_ms(), limit, int(lease_seconds * 1000)])
        return int(lease), [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def ping(self) -> bool:
        return bool(self.client.ping())
