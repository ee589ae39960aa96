"""Delivery claims: the right to run a message's effect, one per (message, generation), taken
by ``begin`` and held under a lease that its holder renews and releases."""

from __future__ import annotations

from integration.store.core import StoreCore


class Claims(StoreCore):
    """Renewal and release of a claim by its holder."""

    def release_claim(self, message_id: str, generation: int, holder: str) -> None:
        """Give the claim up, if ``holder`` still holds it."""
        key = self.keys.claim(message_id, generation)
        if self.client.get(key) == holder.encode():
            self.client.delete(key)

    def renew_claim(self, message_id: str, generation: int, holder: str,
                    lease_seconds: float) -> bool:
        """Extend ``holder``'s claim by ``lease_seconds``; False when it no longer holds it."""
        return bool(self._renew_claim(keys=[self.keys.claim(message_id, generation)],
                                      args=[holder, int(lease_seconds * 1000)]))
