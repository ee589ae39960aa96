"""Waits parked outside the broker: retries and deferrals in the due set until their time
(decision 0003), taken under a lease by the loop that re-enqueues them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from integration.messages.status import Status
from integration.store.codec import history_entry, now_ms
from integration.store.lifecycle import Lifecycle


class ParkedWaits(Lifecycle):
    """The due set: a parked wait is a transition (``Lifecycle``) plus a due time."""

    def schedule(self, message_id: str, status: Status, due_in: float, *,
                 fields: Mapping[str, Any], detail: Mapping[str, Any] | None = None,
                 claim: tuple[int, str] | None = None) -> None:
        """Move a message to ``status`` (retrying, deferred) and park it until it is due; with
        ``claim`` (generation, holder), only while that holder holds it, releasing it (else
        ``ClaimLost``).

        Long waits never sit in the broker, where a countdown past the visibility timeout
        would run the task twice (celery #2599).
        """
        self.transition(message_id, status, fields=fields, detail=detail, claim=claim,
                        due_at=now_ms() + int(due_in * 1000))

    def hold_back(self, message_id: str, due_in: float, detail: Mapping[str, Any]) -> None:
        """Park a delivery without changing its status (its claim is held elsewhere)."""
        at = now_ms()
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(self.keys.history(message_id), history_entry("held back", at, detail))
        pipe.zadd(self.keys.due, {message_id: at + int(due_in * 1000)})
        pipe.execute()

    def take_due(self, limit: int, lease_seconds: float) -> tuple[int, list[str]]:
        """Ids whose wait is over, leased to the caller until the returned score."""
        return self._take_leased(self.keys.due, limit, lease_seconds)

    def release_due(self, message_id: str, lease: int) -> None:
        """Remove a message's due entry if it is still the lease ``take_due`` gave."""
        self._release_due(keys=[self.keys.due], args=[message_id, lease])
