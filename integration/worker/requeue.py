"""Puts messages whose wait is over (retries, held-back deliveries, messages the reconciler
found that nothing held) back into the broker.

Waits are kept in a Redis sorted set rather than as broker countdowns, so no wait is ever
longer than the visibility timeout inside the broker. Every worker runs one loop; the
lease in ``take_due`` keeps two loops from re-enqueueing the same message, and a loop that
dies mid-way leaves its messages due again after the lease.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence
from typing import Protocol

from integration.broker.publisher import Outgoing, Publisher
from integration.messages.status import Status
from integration.store.records import StatusStore

log = logging.getLogger(__name__)

#: Statuses whose due entry still means "enqueue again" (``accepted``: the reconciler found
#: a message whose first publish never happened).
WAITING = (Status.RETRYING, Status.DEFERRED, Status.PROCESSING, Status.QUEUED, Status.ACCEPTED)


class Requeuer:
    def __init__(self, store: StatusStore, publisher: Publisher, *, lease_seconds: float = 30,
                 batch: int = 100) -> None:
        self.store = store
        self.publisher = publisher
        self.lease_seconds = lease_seconds
        self.batch = batch

    def run_once(self) -> int:
        """Re-enqueue what is due now; returns how many were sent."""
        lease, ids = self.store.take_due(self.batch, self.lease_seconds)
        sent = 0
        for message_id in ids:
            record = self.store.get(message_id)
            if record is None or record["status"] not in WAITING:
                self.store.release_due(message_id, lease)  # finished, replayed or expired
                continue
            outcome = self.publisher.publish(
                [Outgoing(message_id, record["envelope"], record["queue"])])
            if outcome.error is not None:
                log.warning("could not re-enqueue %s: %s", message_id, outcome.error)
                continue  # due again when the lease ends
            self.store.transition(message_id, Status.QUEUED,
                                  allowed_from=(Status.RETRYING, Status.DEFERRED,
                                                Status.ACCEPTED))
            self.store.release_due(message_id, lease)
            sent += 1
        return sent


class Pass(Protocol):
    batch: int

    def run_once(self) -> int: ...


class RequeueLoop(threading.Thread):
    """A daemon thread calling each pass's ``run_once`` every ``interval`` seconds until
    stopped (re-enqueueing due retries; delivering overdue events from the outbox; the
    heartbeat; the reconciler)."""

    def __init__(self, passes: Sequence[Pass], interval: float,
                 name: str = "integration-requeue") -> None:
        super().__init__(name=name, daemon=True)
        self.passes = list(passes)
        self.interval = interval
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            for work in self.passes:
                try:
                    # A backlog is worked without waiting, but a stop ends it between batches.
                    while work.run_once() >= work.batch and not self._stopped.is_set():
                        pass
                except Exception:  # noqa: BLE001 - the loop must outlive an outage
                    log.warning("%s pass failed: %s", type(work).__name__, sys.exc_info()[1])
                if self._stopped.is_set():
                    break

    def stop(self, timeout: float | None = None) -> bool:
        """Stop once the pass under way has finished, waiting up to ``timeout`` seconds;
        True when the thread has ended.

        A pass cut off by the process exiting (the thread is a daemon) could leave a
        message published but still leased, to be enqueued a second time after the lease.
        """
        self._stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
        return not self.is_alive()
