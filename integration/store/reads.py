"""Reading records: one message with its history, listings by index, counts, and the few
fields other layers ask about many messages at once."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

import orjson

from integration.store.codec import decode_delivery_state, decode_record, parse_cursor
from integration.store.core import StoreCore
from integration.store.model import DeliveryState

#: How many index entries one list request examines before it returns a cursor.
_SCAN_BUDGET = 2000


class Reads(StoreCore):
    """Reads of records, none of which writes (but for dropping index entries of expired
    records met while listing)."""

    def caused_by(self, message_id: str) -> list[str]:
        """The ids of the messages this one caused (the next steps of its chain)."""
        return sorted(m.decode() for m in cast(set[bytes],
                                               self.client.smembers(self.keys.caused(message_id))))

    def status_of(self, message_id: str) -> str | None:
        """A message's status; None when it has no record."""
        value = cast(bytes | None, self.client.hget(self.keys.record(message_id), "status"))
        return value.decode() if value is not None else None

    def statuses(self, message_ids: Sequence[str]) -> dict[str, str | None]:
        """Each message's status (None when it has no record), in one round trip."""
        return self._field_of_each(message_ids, "status")

    def owners(self, message_ids: Sequence[str]) -> dict[str, str | None]:
        """Who submitted each message (None once its record has expired), in one round trip."""
        return self._field_of_each(message_ids, "owner")

    def _field_of_each(self, message_ids: Sequence[str], field: str) -> dict[str, str | None]:
        pipe = self.client.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.hget(self.keys.record(message_id), field)
        return {message_id: value.decode() if value else None
                for message_id, value in zip(message_ids, pipe.execute(), strict=True)}

    def link_targets(self, message_ids: Sequence[str]) -> dict[str, tuple[str, str] | None]:
        """Each message's (owner, type), None where it has no record (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.hmget(self.keys.record(message_id), ["owner", "type"])
        return {message_id: (owner.decode(), kind.decode() if kind else "") if owner else None
                for message_id, (owner, kind) in zip(message_ids, pipe.execute(), strict=True)}

    def delivery_state(self, message_id: str) -> DeliveryState:
        """What a delivery needs to know about its message, in one round trip."""
        return decode_delivery_state(cast(list[bytes | None], self.client.hmget(
            self.keys.record(message_id),
            ["status", "generation", "released_by", "channel", "accepted_ms", "queued_at",
             "owner"])))

    def recorded_envelope(self, message_id: str) -> tuple[str | None, dict[str, Any] | None]:
        """The channel and the envelope recorded for a message (None, None without one)."""
        channel, envelope = cast(list[bytes | None], self.client.hmget(
            self.keys.record(message_id), ["channel", "envelope"]))
        return (channel.decode() if channel else None,
                orjson.loads(envelope) if envelope else None)

    def get(self, message_id: str) -> dict[str, Any] | None:
        """A message's record with its history; None when it has none."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.record(message_id))
        pipe.lrange(self.keys.history(message_id), 0, -1)
        raw, history = pipe.execute()
        if not raw:
            return None
        record = decode_record(raw)
        record["history"] = [json.loads(entry) for entry in history]
        return record

    # In this class body ``list`` is the method below: the methods annotated with the
    # builtin come before it.
    def list(
        self,
        *,
        type: str | None = None,
        status: str | None = None,
        owner: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Most recent first, paged by an opaque cursor ``<score>:<id>``.

        Walks the index of the first filter given (owner, status, type) and checks the others
        on each record.
        """
        filters = {k: v for k, v in (("owner", owner), ("status", status), ("type", type))
                   if v is not None}
        kind = next(iter(filters), "all")
        index = self.keys.index(kind, filters[kind]) if filters else self.keys.index("all")
        max_score, after_id = parse_cursor(cursor)
        if until_ms is not None and (max_score == "+inf" or until_ms < max_score):
            max_score, after_id = until_ms, None
        min_score: Any = since_ms if since_ms is not None else "-inf"
        found: list[dict[str, Any]] = []
        scanned = 0
        offset = 0
        stale: list[str] = []
        seen: set[str] = set()
        last: tuple[int, str] | None = None
        while len(found) < limit and scanned < _SCAN_BUDGET:
            # Walk down from the cursor; a batch's messages share one score, so members with
            # the cursor's score are ordered by id (descending) and skipped up to the cursor.
            batch = cast(list[tuple[bytes, float]], self.client.zrevrangebyscore(
                index, max_score, min_score, start=offset, num=limit + 50, withscores=True
            ))
            if not batch:
                last = None
                break
            if max_score == "+inf":
                # Later pages are read by offset: messages accepted meanwhile (higher scores)
                # would shift it and show a member twice. The walk stays below this page's top.
                max_score = int(batch[0][1])
            offset += len(batch)
            candidates = []
            for member, score in batch:
                member_id = member.decode()
                if after_id is not None and int(score) == max_score and member_id >= after_id:
                    continue
                if member_id in seen:  # one accepted within the top page's millisecond
                    continue
                seen.add(member_id)
                candidates.append((member_id, int(score)))
            pipe = self.client.pipeline(transaction=False)
            for member_id, _ in candidates:
                pipe.hgetall(self.keys.record(member_id))
            for (member_id, score), raw in zip(candidates, pipe.execute(), strict=True):
                scanned += 1
                last = (score, member_id)
                if not raw:
                    stale.append(member_id)  # expired record: drop its index entry
                    continue
                record = decode_record(raw)
                if all(record.get(k) == v for k, v in filters.items()):
                    found.append(record)
                    if len(found) == limit:
                        break
        if stale:
            self.client.zrem(index, *stale)
        return found, (f"{last[0]}:{last[1]}" if last else None)

    def count(self, *, status: str | None = None, type: str | None = None) -> tuple[int, bool]:
        """How many messages an index holds (exact when only one filter is given)."""
        if status and type:
            return cast(int, self.client.zcard(self.keys.index("status", status))), False
        key = (self.keys.index("status", status) if status else
               self.keys.index("type", type) if type else self.keys.index("all"))
        return cast(int, self.client.zcard(key)), True
