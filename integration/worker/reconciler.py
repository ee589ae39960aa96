"""The reconciler: the status store is the ledger, and a message nothing holds is sent again.

The broker can lose a message the store still says is on its way: kombu's Redis transport
pops a message and records it as unacknowledged in two steps (kombu #305), a worker dies
holding deliveries, a publish fails while the record stays. One elected instance (a Redis
lease) compares, every pass, the records that are not final and have not changed for a while
with what can hold them: a live claim, the due set, a live worker's heartbeat, the type's
queue, a recent unacknowledged delivery. A record that nothing holds in two passes in a row,
unchanged in between, goes back to the due set, whose loop enqueues it again under the same
generation; the delivery claim keeps its effect single. Unacknowledged deliveries of dead
workers are forgotten once their message is sent again or finished.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from integration.broker.holdings import Holdings, Unacked
from integration.messages.status import Status
from integration.store.model import LedgerEntry
from integration.store.records import StatusStore
from integration.worker.heartbeats import Heartbeats
from integration.worker.lease import Lease

log = logging.getLogger(__name__)

#: The statuses a message moves through on its own; ``held`` waits for an operator.
NON_FINAL = (Status.ACCEPTED, Status.QUEUED, Status.PROCESSING, Status.RETRYING,
             Status.DEFERRED)
#: Statuses whose message is somewhere in the broker when all is well.
_IN_BROKER = (Status.ACCEPTED, Status.QUEUED, Status.PROCESSING)
#: The oldest records read per status and pass.
DEFAULT_LIMIT = 10_000

@dataclass(frozen=True)
class Stranded:
    """A record that nothing holds, and why it looks so."""

    entry: LedgerEntry
    reason: str
    #: Unacknowledged deliveries of this message whose consumer is gone.
    lost: tuple[Unacked, ...] = ()

    @property
    def signature(self) -> tuple[str, int, str]:
        return (self.entry.status, self.entry.generation, self.entry.updated_at)

    def to_json(self) -> dict[str, object]:
        entry = self.entry
        return {"id": entry.id, "type": entry.type, "status": entry.status,
                "generation": entry.generation, "queue": entry.queue,
                "updated_at": entry.updated_at, "reason": self.reason}


@dataclass(frozen=True)
class Survey:
    """One look at the ledger: what nothing holds, and lost deliveries of finished messages."""

    stranded: list[Stranded]
    finished_lost: list[Unacked]
    checked: int


class Reconciler:
    """A pass for a worker's loop: reconcile every ``interval`` seconds while elected."""

    batch = 1

    def __init__(self, store: StatusStore, holdings: Holdings, heartbeats: Heartbeats, *,
                 instance: str, interval: float, stale_after: float, heartbeat_ttl: float,
                 lease: float, limit: int = DEFAULT_LIMIT,
                 on_redelivered: Callable[[LedgerEntry], None] | None = None) -> None:
        self.store = store
        self.holdings = holdings
        self.heartbeats = heartbeats
        self.instance = instance
        self.interval = interval
        self.stale_after = stale_after
        self.heartbeat_ttl = heartbeat_ttl
        self.lease = lease
        self.limit = limit
        self.on_redelivered = on_redelivered
        self._lease = Lease(store.client, f"{store.prefix}:reconciler", instance, lease)
        #: Suspects of the last pass, by id, with the record they had then.
        self._suspects: dict[str, tuple[str, int, str]] = {}

    def leading(self) -> bool:
        return self._lease.held()

    def run_once(self) -> int:
        """A pass for the loop (which repeats a pass at once only when it returns its batch)."""
        self.reconcile()
        return 0

    def reconcile(self) -> int:
        """One pass when elected: how many messages were sent again."""
        if not self.leading():
            self._suspects = {}
            return 0
        survey = self.survey()
        confirmed = [s for s in survey.stranded
                     if self._suspects.get(s.entry.id) == s.signature]
        self._suspects = {s.entry.id: s.signature for s in survey.stranded
                          if s not in confirmed}
        sent = sum(self._redeliver(stranded) for stranded in confirmed)
        if survey.finished_lost:
            self.holdings.drop(survey.finished_lost)
            log.info("forgot %d unacknowledged deliveries of finished messages whose worker "
                     "is gone", len(survey.finished_lost))
        return sent

    def survey(self, now: float | None = None) -> Survey:
        """What nothing holds now. Read in the order a message moves (record, queue,
        unacknowledged, heartbeat, claim), so a message moving on is seen in a later place."""
        now = time.time() if now is None else now
        stale_before = int((now - self.stale_after) * 1000)
        ids = self.store.unfinished(NON_FINAL, stale_before, self.limit)
        entries = [e for e in self.store.ledger_entries(ids)
                   if e.status in NON_FINAL and e.updated_ms <= stale_before]
        searched = _IN_BROKER if self.holdings.exact else (Status.QUEUED,)
        by_queue: dict[str, set[str]] = {}
        for entry in entries:
            if entry.status in searched:
                by_queue.setdefault(entry.queue, set()).update(_names(entry))
        in_queues = self.holdings.in_queues(by_queue) if by_queue else set()
        unacked = self.holdings.unacked()
        alive = self.heartbeats.alive()
        claimed, due = self.store.held_in_store(entries)

        recent_after = now - self.heartbeat_ttl
        taken: dict[str, list[Unacked]] = {}
        for delivery in unacked:
            taken.setdefault(delivery.task_id, []).append(delivery)
        stranded = []
        for entry in entries:
            names = _names(entry)
            deliveries = [d for name in names for d in taken.get(name, ())]
            if entry.id in claimed or entry.id in due or names & alive.held:
                continue
            if entry.status in (Status.RETRYING, Status.DEFERRED):
                stranded.append(Stranded(entry, "waits for a retry but is not in the due set"))
                continue
            if names & in_queues or any(d.delivered_at > recent_after for d in deliveries):
                continue
            reason = ("taken by a worker that is gone" if deliveries else
                      "in no queue, with no live worker and no claim")
            stranded.append(Stranded(entry, reason, tuple(deliveries)))

        # Deliveries of dead workers whose message is finished (or no longer recorded as
        # non-final): forgotten, or the broker would restore a copy after its visibility
        # timeout. Ids that are not records (other tasks) are left alone.
        candidates = {e.id for e in entries} | {e.task_id for e in entries}
        orphans = [d for d in unacked if d.task_id not in candidates
                   and d.task_id not in alive.held and d.delivered_at <= recent_after]
        statuses = self.store.statuses([d.task_id for d in orphans]) if orphans else {}
        finished = [d for d in orphans
                    if statuses.get(d.task_id) in (Status.SUCCEEDED, Status.DEAD)]
        return Survey(stranded, finished, len(entries))

    def _redeliver(self, stranded: Stranded) -> int:
        entry = stranded.entry
        try:
            if not self.store.redeliver(entry, {"reason": stranded.reason,
                                                "was": entry.status}):
                return 0  # it moved since it was read: something holds it
            self.holdings.drop(stranded.lost)
        except redis.RedisError as exc:
            log.warning("could not send %s again: %s", entry.id, exc)
            return 0
        log.warning("message %s (%s, %s) %s: sent again", entry.id, entry.type, entry.status,
                    stranded.reason)
        if self.on_redelivered is not None:
            self.on_redelivered(entry)
        return 1


def _names(entry: LedgerEntry) -> set[str]:
    """The ids a message goes by in the broker: its own and its last task id."""
    return {entry.id, entry.task_id} - {""}


def stranded_report(survey: Survey) -> Sequence[dict[str, object]]:
    return [s.to_json() for s in survey.stranded]
