"""The outbox of result events whose deliveries to subscribers are still to be made: parked by
``finish``, cleared once delivered, taken again under a lease when overdue."""

from __future__ import annotations

from integration.store.core import StoreCore


class Outbox(StoreCore):
    """The outbox set, scored by when its deliveries are overdue."""

    def take_outbox(self, limit: int, lease_seconds: float) -> tuple[int, list[str]]:
        """Messages whose event deliveries are overdue, leased to the caller."""
        return self._take_leased(self.keys.outbox, limit, lease_seconds)

    def clear_outbox(self, message_id: str) -> None:
        self._own.execute("ZREM", self.keys.outbox, message_id)
