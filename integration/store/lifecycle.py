"""A message's life in the store: created, moved from status to status, begun and finished by
a delivery, replayed from the dead letters, discarded or deleted."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import orjson
import redis

from integration.messages.status import Status
from integration.store.codec import (
    changed_fields,
    decode_delivery_state,
    decode_transition,
    history_entry,
    iso,
    now_ms,
)
from integration.store.core import StoreCore
from integration.store.model import Begun, ClaimLost, InlineDelivery, NewRecord, Transition


class Lifecycle(StoreCore):
    """The writes that move a message through its statuses, each one script or transaction
    so that the status, its history and the indexes change together."""

    def create_many(self, records: Sequence[NewRecord], request: str = "") -> list[bool]:
        """Create records in one transaction; False where a record with that id exists.

        ``request`` marks the records as this call's, so that ``discard_many`` removes only
        them (never a record another request created under the same id).
        """
        if not records:
            return []
        at = now_ms()
        pipe = self.client.pipeline(transaction=True)
        positions: list[int] = []
        for record in records:
            fields = self._fields(record, record.status, at, request)
            flat: list[Any] = [item for pair in fields.items() for item in pair]
            entry = history_entry(record.status, at, {"channel": record.channel})
            for command in self.cause_links(record):
                pipe.execute_command(*command)
            positions.append(len(pipe.command_stack))
            self._create(
                keys=self._new_record_keys(record, record.status),
                args=[record.id, at, self.ttl, entry, self.cutoff(at), *flat],
                client=pipe,
            )
        replies = pipe.execute()
        return [bool(replies[i]) for i in positions]

    def _fields(self, record: NewRecord, status: Status, at: int,
                request: str) -> dict[str, Any]:
        return {
            "id": record.id,
            "type": record.type,
            "queue": record.queue,
            "owner": record.owner,
            "channel": record.channel,
            "status": str(status),
            "attempts": 0,
            "accepted_ms": at,
            "accepted_at": iso(at),
            "updated_at": iso(at),
            "envelope": record.envelope_json,
            "request": request,
            "generation": 1,
        }

    def _new_record_keys(self, record: NewRecord, status: str) -> list[str]:
        """A new record's keys: the record, its history, then its four index entries' sets
        (all, type, status, owner)."""
        return [self.keys.record(record.id), self.keys.history(record.id),
                self.keys.index("all"), self.keys.index("type", record.type),
                self.keys.index("status", str(status)), self.keys.index("owner", record.owner)]

    def transition(
        self,
        message_id: str,
        status: Status,
        *,
        allowed_from: Iterable[Status] = (),
        fields: Mapping[str, Any] | None = None,
        detail: Mapping[str, Any] | None = None,
        count_attempt: bool = False,
        claim: tuple[int, str] | None = None,
        due_at: int | None = None,
        pipe: redis.client.Pipeline | None = None,
    ) -> Transition | None:
        """Move a message to ``status`` if it is in one of ``allowed_from`` (any when empty).

        With ``claim`` (generation, holder), only while that holder still holds the claim,
        which the move releases (else ``ClaimLost``); with ``due_at`` (ms), parked in the due
        set until then, in the same step."""
        at = now_ms()
        flat = changed_fields(status, at, fields)
        generation, holder = claim if claim is not None else (1, "")
        reply = self._transition(
            keys=[self.keys.record(message_id), self.keys.history(message_id),
                  self.keys.claim(message_id, generation), self.keys.due],
            args=[
                message_id, str(status), at, self.ttl, ",".join(map(str, allowed_from)),
                history_entry(status, at, detail), "1" if count_attempt else "0",
                self.keys.index("status") + ":", self.cutoff(at), holder,
                "" if due_at is None else due_at, *flat,
            ],
            client=pipe,
        )
        if pipe is not None:
            return None
        if int(reply[0]) == -3:
            raise ClaimLost(message_id, generation, _text(reply[1]), str(status))
        return decode_transition(reply)

    def mark_queued_many(self, message_ids: Sequence[str]) -> None:
        """Record that these messages are in the broker, unless a worker got there first."""
        if not message_ids:
            return
        pipe = self.client.pipeline(transaction=False)
        for message_id in message_ids:
            self.transition(message_id, Status.QUEUED, allowed_from=(Status.ACCEPTED,), pipe=pipe)
        pipe.execute()

    def discard_many(self, records: Sequence[NewRecord], request: str,
                     status: Status | None = None) -> None:
        """Remove this request's records of messages that did not reach the broker (the client
        got a 503), so that the same ids can be submitted again; ``status`` is the one they
        were created with (their record's)."""
        if not records:
            return
        pipe = self.client.pipeline(transaction=False)
        for record in records:
            self._discard(
                keys=self._new_record_keys(record, status or record.status),
                args=[request, record.id], client=pipe,
            )
        pipe.execute()

    def begin(self, message_id: str, holder: str, lease_seconds: int, *,
              startable: Iterable[Status], start: bool = False,
              fields: Mapping[str, Any] | None = None,
              detail: Mapping[str, Any] | None = None) -> Begun:
        """A delivery's first step, in one round trip: the delivery state, the claim of the
        message's current generation for ``lease_seconds`` if its status is in
        ``startable``, and with ``start`` the move to ``processing`` (one more attempt;
        ``fields`` set, ``detail`` and the generation in the history entry)."""
        at = now_ms()
        flat = ["status", str(Status.PROCESSING), *changed_fields(Status.PROCESSING, at, fields)]
        entry = history_entry(Status.PROCESSING, at, detail)
        reply = self._begin(
            keys=[self.keys.record(message_id), self.keys.history(message_id)],
            args=[message_id, self.keys.claim_prefix(message_id), holder, lease_seconds,
                  ",".join(map(str, startable)), "1" if start else "0",
                  str(Status.PROCESSING), self.ttl, entry[:-1] + ',"generation":',
                  self.keys.index("status") + ":", self.cutoff(at), *flat])
        code = int(reply[0])
        if code == -1:
            return Begun(None)
        state = decode_delivery_state(reply[1])
        if code == 0:
            return Begun(state)
        if code == 2:
            return Begun(state, claim_remaining=max(int(reply[2]), 0) / 1000)
        attempts = int(reply[2])
        return Begun(state, claimed=True,
                     started=Transition(True, state.status, attempts) if start else None)

    def finish(self, message_id: str, status: Status, *, fields: Mapping[str, Any],
               topic: str, event: Mapping[str, Any], detail: Mapping[str, Any] | None = None,
               outbox_in: float | None = None, claim: tuple[int, str] | None = None,
               only_if: tuple[str, bytes | None] | None = None,
               inline: Sequence[InlineDelivery] = (), owner: str = "direct") -> bool:
        """Record the final status and its result event together (one script, one round
        trip), so no reader sees a finished message without its event.

        With ``outbox_in``, the event is also parked in the outbox: its deliveries to
        subscribers are made right after, and the outbox makes them again after
        ``outbox_in`` seconds if the process died or the broker failed in between.
        ``claim`` (generation, holder) fences the finish: it is written only while that
        holder still holds the claim, which it releases (else ``ClaimLost``, nothing
        written: the claim lapsed and another delivery may have finished the message). With
        ``only_if`` (key, value), nothing is written unless the key still holds the value
        (None: no value); returns False then, True otherwise. ``inline``: deliveries of the
        event that already ran in this worker, recorded succeeded in the same step (they
        belong to ``owner``, and the message's trace shows them).
        """
        at = now_ms()
        flat = ["status", str(status), *changed_fields(status, at, fields)]
        generation, holder = claim if claim is not None else (1, "")
        check = "" if only_if is None else (only_if[1] or b"-")
        reply = self._finish(
            keys=[self.keys.record(message_id), self.keys.history(message_id),
                  self.keys.events, self.keys.outbox, self.keys.claim(message_id, generation),
                  only_if[0] if only_if is not None else self.keys.events],
            args=[message_id, str(status), self.ttl, history_entry(status, at, detail),
                  self.keys.index("status") + ":", self.cutoff(at), topic,
                  json.dumps(event, separators=(",", ":")), self.events_maxlen,
                  history_entry("published", now_ms(), {"topic": topic}),
                  "" if outbox_in is None else now_ms() + int(outbox_in * 1000),
                  holder, check, len(flat), *flat, *self._inline_args(message_id, owner, at,
                                                                       inline)])
        if int(reply[0]) == -3:
            raise ClaimLost(message_id, generation, _text(reply[1]), str(status))
        return int(reply[0]) != -2

    def _inline_args(self, cause: str, owner: str, at: int,
                     deliveries: Sequence[InlineDelivery]) -> list[Any]:
        """The finish script's arguments for the deliveries that ran inline."""
        if not deliveries:
            return []
        args: list[Any] = [
            len(deliveries), at, iso(at), owner, self.keys.record(""), self.keys.history(""),
            self.keys.index("all"), self.keys.index("status", str(Status.SUCCEEDED)),
            self.keys.index("type") + ":", self.keys.index("owner", owner),
            self.keys.caused(cause)]
        entry = history_entry(Status.SUCCEEDED, at, {"inline": True})
        for delivery in deliveries:
            args += [delivery.id, delivery.type, delivery.queue,
                     orjson.dumps(delivery.envelope).decode(),
                     orjson.dumps(delivery.result, default=str).decode(), entry]
        return args

    def replay_many(self, message_ids: Sequence[str], by: str) -> list[int]:
        """Move dead messages back to queued as a new generation; 0 where one was not dead."""
        at = now_ms()
        pipe = self.client.pipeline(transaction=False)
        for message_id in message_ids:
            self._replay(
                keys=[self.keys.record(message_id), self.keys.history(message_id),
                      self.keys.index("status", str(Status.DEAD)),
                      self.keys.index("status", str(Status.QUEUED))],
                args=[message_id, iso(at), history_entry("queued", at, {"replayed_by": by}),
                      self.ttl],
                client=pipe,
            )
        return [int(generation) for generation in pipe.execute()]

    def delete(self, message_id: str) -> bool:
        """Remove a message's record, history and index entries for good."""
        record = self.client.hmget(self.keys.record(message_id), ["type", "status", "owner"])
        message_type, status, owner = (v.decode() if v else "" for v in cast(list, record))
        if not status:
            return False
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.record(message_id), self.keys.history(message_id))
        pipe.zrem(self.keys.index("all"), message_id)
        pipe.zrem(self.keys.index("type", message_type), message_id)
        pipe.zrem(self.keys.index("status", status), message_id)
        pipe.zrem(self.keys.index("owner", owner), message_id)
        pipe.zrem(self.keys.due, message_id)
        pipe.execute()
        return True


def _text(value: bytes | str | None) -> str | None:
    return (value.decode() if isinstance(value, bytes) else value) or None
