"""Dead letters: messages that ended ``dead``, kept with every attempt's error; replay and purge.

A replay re-enqueues the message under the same id as a new delivery generation (so its
effect runs again, once); replaying the same dead letter twice enqueues it once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from integration.broker.publisher import Outgoing, Publisher
from integration.messages.status import Status
from integration.store.records import StatusStore


@dataclass(frozen=True)
class Replayed:
    id: str
    generation: int


def attempt_errors(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Each failed attempt's error, oldest first, from the message's history."""
    return [{"at": entry["at"], **entry["error"]} for entry in record.get("history", [])
            if isinstance(entry.get("error"), dict)]


class DeadLetters:
    def __init__(self, store: StatusStore, publisher: Publisher) -> None:
        self.store = store
        self.publisher = publisher

    def page(self, *, type: str | None = None, since_ms: int | None = None,
             until_ms: int | None = None, limit: int = 50, cursor: str | None = None,
             owner: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Dead letters, newest first; only ``owner``'s when given."""
        return self.store.list(status=str(Status.DEAD), type=type, since_ms=since_ms,
                               until_ms=until_ms, limit=limit, cursor=cursor, owner=owner)

    def get(self, message_id: str) -> dict[str, Any] | None:
        record = self.store.get(message_id)
        if record is None or record.get("status") != Status.DEAD:
            return None
        record["attempt_errors"] = attempt_errors(record)
        return record

    def replay(self, message_ids: Sequence[str], by: str) -> list[Replayed]:
        """Replay these dead letters; ids that are not dead (any more) are skipped."""
        generations = self.store.replay_many(message_ids, by)
        replayed = [Replayed(i, g) for i, g in zip(message_ids, generations, strict=True) if g]
        records = [self.store.get(r.id) for r in replayed]
        outgoing = [Outgoing(r["id"], r["envelope"], r["queue"]) for r in records if r]
        outcome = self.publisher.publish(outgoing)
        for item in outcome.unsent(outgoing):
            # Not enqueued: back to the dead letters, so nothing is lost or stuck as queued.
            self.store.transition(item.id, Status.DEAD, allowed_from=(Status.QUEUED,),
                                  detail={"note": "replay could not be enqueued"})
        if outcome.error is not None:
            raise outcome.error
        return replayed

    def replay_matching(self, *, type: str | None = None, since_ms: int | None = None,
                        until_ms: int | None = None, limit: int = 1000, by: str,
                        progress: Callable[[int], None] | None = None,
                        owner: str | None = None) -> list[Replayed]:
        """Replay up to ``limit`` dead letters matching the filters (only ``owner``'s when
        given), a page at a time."""
        done: list[Replayed] = []
        for page in self._pages(type, since_ms, until_ms, limit, owner):
            done += self.replay([r["id"] for r in page], by)
            if progress:
                progress(len(page))
        return done

    def delete(self, message_id: str) -> bool:
        if self.store.status_of(message_id) != Status.DEAD:
            return False
        return self.store.delete(message_id)

    def purge(self, *, type: str | None = None, since_ms: int | None = None,
              until_ms: int | None = None, limit: int = 100_000,
              progress: Callable[[int], None] | None = None) -> int:
        """Delete up to ``limit`` dead letters matching the filters; how many were deleted."""
        purged = 0
        for page in self._pages(type, since_ms, until_ms, limit):
            purged += sum(self.delete(r["id"]) for r in page)
            if progress:
                progress(len(page))
        return purged

    def _pages(self, type: str | None, since_ms: int | None, until_ms: int | None,
               limit: int, owner: str | None = None) -> Iterable[list[dict[str, Any]]]:
        # One walk down the index behind a position cursor (score and id), which stays valid
        # as replayed or purged letters leave the index. A replayed letter that dies again
        # during the walk is back above the cursor, so one call never replays it twice.
        remaining, cursor = limit, None
        while remaining > 0:
            page, cursor = self.page(type=type, since_ms=since_ms, until_ms=until_ms,
                                     limit=min(remaining, 100), cursor=cursor, owner=owner)
            if page:
                remaining -= len(page)
                yield page
            if cursor is None:
                return
