"""The ledger as the reconciler reads it (decision 0001): records that are not final, what the
store itself holds of them, and the re-delivery of those nothing holds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from integration.messages.status import Status
from integration.store.codec import history_entry, iso, now_ms
from integration.store.core import StoreCore
from integration.store.model import LedgerEntry


class Ledger(StoreCore):
    """Non-final records, their claims and waits, and re-delivery through the due set."""

    def unfinished(self, statuses: Iterable[Status], accepted_before_ms: int,
                   limit: int) -> list[str]:
        """Ids of records in ``statuses`` accepted before the given time, oldest first, at
        most ``limit`` per status."""
        pipe = self.client.pipeline(transaction=False)
        for status in statuses:
            pipe.zrangebyscore(self.keys.index("status", str(status)), "-inf",
                               accepted_before_ms, start=0, num=limit)
        return [member.decode() for members in pipe.execute() for member in members]

    def ledger_entries(self, message_ids: Sequence[str]) -> list[LedgerEntry]:
        """The records of ``message_ids`` that still exist."""
        pipe = self.client.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.hmget(self.keys.record(message_id), ["type", "status", "generation", "queue",
                                                      "updated_at", "task_id"])
        entries = []
        for message_id, values in zip(message_ids, pipe.execute(), strict=True):
            kind, status, generation, queue, updated, task_id = (
                v.decode() if v else "" for v in values)
            if not status:
                continue
            entries.append(LedgerEntry(
                id=message_id, type=kind, status=status, generation=int(generation or 1),
                queue=queue, updated_at=updated, task_id=task_id,
                updated_ms=int(datetime.fromisoformat(updated).timestamp() * 1000)
                if updated else 0))
        return entries

    def held_in_store(self, entries: Sequence[LedgerEntry]) -> tuple[set[str], set[str]]:
        """Which of ``entries`` hold a live claim on their generation, and which wait in
        the due set."""
        pipe = self.client.pipeline(transaction=False)
        for entry in entries:
            pipe.exists(self.keys.claim(entry.id, entry.generation))
            pipe.zscore(self.keys.due, entry.id)
        replies = pipe.execute()
        claimed = {e.id for e, reply in zip(entries, replies[0::2], strict=True) if reply}
        due = {e.id for e, reply in zip(entries, replies[1::2], strict=True)
               if reply is not None}
        return claimed, due

    def redeliver(self, entry: LedgerEntry, detail: Mapping[str, Any]) -> bool:
        """Send a message that nothing holds back through the due set; False when its record
        changed since ``entry`` was read (something holds it after all)."""
        at = now_ms()
        return bool(self._redeliver(
            keys=[self.keys.record(entry.id), self.keys.history(entry.id), self.keys.due],
            args=[entry.id, at, iso(at), entry.status, entry.updated_at,
                  history_entry("reconciled", at, detail)]))
