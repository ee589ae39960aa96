"""Keeps the delivery claims of this process alive while their handlers run.

A claim's lease can then be short: a killed delivery frees its message within one lease,
while a handler that runs longer than the lease keeps its claim (renewed every third of it)
and is never run twice beside a redelivery.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from integration.worker.recovery import RENEWALS_PER_LEASE

log = logging.getLogger(__name__)

#: Renews ``(message id, generation, holder, lease seconds)``; False when the claim lapsed.
Renew = Callable[[str, int, str, float], bool]


class ClaimKeeper:
    """One daemon thread per process renews the claims registered with ``holding``."""

    def __init__(self, renew: Renew, lease_seconds: float) -> None:
        self.renew = renew
        self.lease = lease_seconds
        self.every = lease_seconds / RENEWALS_PER_LEASE
        self._held: dict[tuple[str, int], str] = {}
        #: When each held claim was last known to be ours (taken or renewed), monotonic.
        self._confirmed: dict[tuple[str, int], float] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextmanager
    def holding(self, message_id: str, generation: int, holder: str) -> Iterator[None]:
        """Keep ``holder``'s claim on ``(message_id, generation)`` alive inside the block."""
        self._ensure_thread()
        key = (message_id, generation)
        self._held[key] = holder
        self._confirmed[key] = time.monotonic()
        try:
            yield
        finally:
            self._held.pop(key, None)
            self._confirmed.pop(key, None)

    def fresh(self, message_id: str, generation: int) -> bool:
        """Whether the claim surely holds by this process's clock: known to be ours less than
        a third of a lease ago (a process paused since has seen its clock move on)."""
        confirmed = self._confirmed.get((message_id, generation))
        return confirmed is not None and time.monotonic() - confirmed < self.every

    def renew_all(self) -> None:
        """Renew every claim held now (what the thread does every third of a lease)."""
        for (message_id, generation), holder in list(self._held.items()):
            asked = time.monotonic()
            try:
                kept = self.renew(message_id, generation, holder, self.lease)
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("claim of %s could not be renewed: %s", message_id, exc)
                continue
            if kept and (message_id, generation) in self._held:
                self._confirmed[(message_id, generation)] = asked
            if not kept and self._held.get((message_id, generation)) == holder:
                log.warning("claim of %s (generation %d) lapsed while its handler ran: a "
                            "redelivery may run it beside this one", message_id, generation)

    def _ensure_thread(self) -> None:
        # Started lazily in the process that runs deliveries: a forked pool child gets its own.
        if self._pid == os.getpid() and self._thread is not None:
            return
        self._pid = os.getpid()
        self._held = {}
        self._confirmed = {}
        self._thread = threading.Thread(target=self._run, name="integration-claims",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.every):
            self.renew_all()
