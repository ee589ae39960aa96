"""Waiting for the store's replicas: ``WAIT numreplicas timeout`` after a flush's writes.

Redis replicates asynchronously, so a write the master answered may be lost when a replica
is promoted in its place. ``WAIT`` blocks until the replicas acknowledged every write the
calling connection made; it cannot run inside ``MULTI`` or a script (it would answer at
once). The writes of a flush ran on other connections, so the wait first makes a small write
of its own, after them: the replication stream is ordered, and a replica that acknowledged
the mark holds everything written before it.
"""

from __future__ import annotations

import logging

import redis

from integration.store.codec import now_ms
from integration.store.connections import own_connections

log = logging.getLogger(__name__)

#: How long the mark outlives its write (it is only ever overwritten).
_MARK_TTL_MS = 60_000


class ReplicaWait:
    """Whether the writes made so far reached ``replicas`` replicas within ``timeout_ms``."""

    def __init__(self, client: redis.Redis, prefix: str, replicas: int, timeout_ms: int) -> None:
        if replicas < 1 or timeout_ms < 1:
            raise ValueError("a replica wait needs at least one replica and a timeout")
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self._mark = f"{prefix}:replication:mark"
        self._own = own_connections(client)

    def replicated(self) -> bool:
        """True when at least ``replicas`` replicas acknowledged every write made before this
        call; False when fewer did within the timeout, or the wait itself failed (the
        writes happened all the same; only their replication is unknown)."""
        try:
            _, acknowledged = self._own.pipeline([
                ("SET", self._mark, now_ms(), "PX", _MARK_TTL_MS),
                ("WAIT", self.replicas, self.timeout_ms)])
        except Exception as exc:  # noqa: BLE001 - unknown, which the caller answers
            log.warning("replica wait failed: %s", exc)
            return False
        if int(acknowledged) < self.replicas:
            log.warning("%s of %d replica(s) acknowledged the writes within %d ms",
                        acknowledged, self.replicas, self.timeout_ms)
            return False
        return True
