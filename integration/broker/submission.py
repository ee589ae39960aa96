"""Validate and enqueue messages: the one path shared by the gateway and ``integration.client``.

One module because parsing, per-item submission and the flush share one ``Submitter``'s state
(its limits, the coalescer, queue depths, and whether store and broker share a transaction).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from integration import tracing
from integration.broker.coalescer import Coalescer
from integration.broker.publisher import Outgoing, Publisher
from integration.broker.redis_enqueue import OverLimit, RateHit, RecordAndEnqueue
from integration.messages.envelope import FIRING_CHANNEL, FIRING_ID_PREFIX, Envelope
from integration.messages.jsonlimits import JsonLimits
from integration.messages.ownership import CLIENT_ID_MAX, scoped
from integration.messages.problems import (
    Conflict,
    Forbidden,
    InvalidMessage,
    Problem,
    TooManyRequests,
    Unavailable,
    invalid,
)
from integration.messages.registry import Registry
from integration.messages.status import Status
from integration.messages.validation import parse_envelope, registered_type, valid_payload
from integration.security.policy import Grants
from integration.store.connections import ReplyLost
from integration.store.model import EarlierAnswer, IdempotentAnswer, NewRecord
from integration.store.records import StatusStore
from integration.store.replication import ReplicaWait

log = logging.getLogger(__name__)
Item = TypeVar("Item")
Own = TypeVar("Own")


@dataclass(frozen=True)
class Accepted:
    """The message is in the broker, on ``queue``."""

    id: str
    queue: str


class Repeated(Conflict):
    """The request's idempotency key already held an answer (``stored``, as JSON): nothing
    was enqueued. Only for a claiming answer (``IdempotentAnswer.claim``); to anyone else
    it is the conflict it is."""

    def __init__(self, stored: str) -> None:
        super().__init__("A request with this Idempotency-Key was already answered.")
        self.stored = stored


class Uncertain(Unavailable):
    """Recorded or sent, but not known to be enqueued or replicated: a 503 all the same.
    ``accepted`` is what the answer would have been; ``runs`` whether its record is known
    to exist, so that it runs once either way and a repeat may be answered as accepted."""

    runs = True

    def __init__(self, detail: str, accepted: Accepted, retry_after: int,
                 **extensions: str) -> None:
        super().__init__(detail, retry_after=retry_after, id=accepted.id, **extensions)
        self.accepted = accepted


class Unreplicated(Uncertain):
    """The message was recorded and enqueued, but the replica wait timed out: the write is
    not known to be on the store's replicas, so a failover may still lose it, and it may
    still run."""

    def __init__(self, accepted: Accepted, retry_after: int) -> None:
        super().__init__(
            "The message was recorded and enqueued, but is not known to be replicated: a "
            "failover of the store's Redis may lose it, and it may still run. Retrying with "
            "the same Idempotency-Key (or message id) is safe.",
            accepted, retry_after, enqueued="yes", replicated="unknown")


class InDoubt(Uncertain):
    """The broker stopped answering while the message was being enqueued: it may hold it.
    When its record is known to exist (``recorded``: RabbitMQ, written before the publish),
    it stays queued (the broker's copy finds it, or the reconciler sends it again); when the
    record was in the lost transaction itself, nobody can say, and a repeat of the request
    is refused until its key expires."""

    def __init__(self, accepted: Accepted, retry_after: int, *, recorded: bool) -> None:
        super().__init__(
            "The broker stopped answering while the message was being enqueued: it may have "
            "been. Resubmitting it with the same id or Idempotency-Key is safe: it runs at "
            "most once.",
            accepted, retry_after, enqueued="unknown", unreachable="broker")
        self.runs = recorded


class RateLimited(TooManyRequests):
    """The request's rate-limit hit, counted in its message's transaction, was over the
    limit: nothing was recorded, enqueued or claimed. The gateway answers it with the 429
    it gives any request over its limit (with the wait that the limit's window gives)."""

    def __init__(self) -> None:
        super().__init__("Rate limit exceeded.")


Result = Accepted | Problem


def hit_counted(result: Result) -> bool:
    """Whether the transaction that would count a message's rate-limit hit ran (or may
    have): not when the message was refused before it (invalid, a full queue, a broker
    that could not be reached), whose hit the caller counts on its own."""
    return isinstance(result, Uncertain) or \
        not isinstance(result, Unavailable | InvalidMessage)


@dataclass(frozen=True)
class Sender:
    """Who submits: the subject in whose namespace the ids it gives live, and its grants
    (a link to a message it may read or receive is kept; any other stays in its namespace)."""

    subject: str
    grants: Grants | None = None

    def may_link(self, owner: str | None, message_type: str | None) -> bool:
        if owner == self.subject:
            return True
        return self.grants is not None and self.grants.may_link(self.subject, owner,
                                                                message_type)


@dataclass(frozen=True)
class _Request:
    """One caller's messages, waiting to be flushed with others'."""

    envelopes: Sequence[Envelope]
    owner: str
    channel: str
    answer: IdempotentAnswer | None = None
    hit: RateHit | None = None


class Submitter:
    """Turns raw JSON into enqueued messages with a status record, reporting each item's fate."""

    def __init__(self, registry: Registry, store: StatusStore, publisher: Publisher, *,
                 retry_after: int, limits: JsonLimits | None = None,
                 max_queue_depth: int | None = None, coalesce: int = 0,
                 replica_wait: ReplicaWait | None = None) -> None:
        self.limits = limits or JsonLimits()
        self.max_queue_depth = max_queue_depth
        self._depths: dict[str, tuple[float, int]] = {}
        self.registry = registry
        self.store = store
        self.publisher = publisher
        self.retry_after = retry_after
        #: Broker and store share a Redis database: record and enqueue in one transaction.
        self.fused = publisher.shares_database(store.client)
        self.record_and_enqueue = RecordAndEnqueue(store)
        #: Once per flush that wrote, wait for the store's replicas (``WAIT``); a message
        #: whose flush was not acknowledged in time is ``Unreplicated``, never ``Accepted``.
        self.replica_wait = replica_wait
        #: With ``coalesce`` > 0, concurrent submissions of this process share one flush of
        #: at most that many messages (the gateway's single-message fast path).
        #: A flush that raises (it never should) does so before it writes: each request is
        #: then flushed again alone, so that no request fails for another's message.
        self.coalescer: Coalescer[_Request, list[Result]] | None = Coalescer(
            self._submit_together, max_size=coalesce, size_of=lambda r: len(r.envelopes),
            isolate=True) if coalesce > 0 else None

    def parse(self, raw: Any, loc: Sequence[str | int] = (),
              may_submit: Callable[[str], bool] | None = None,
              correlation_id: str | None = None, channel: str | None = None,
              sender: Sender | None = None, correlation_given: bool = False) -> Envelope:
        """Validate an envelope and its type's payload by the rules the worker checks too
        (``integration.messages.validation``); raise ``InvalidMessage`` with each error,
        or ``Forbidden`` when ``may_submit`` refuses the type (checked before the payload) or
        the type is the service's own. An id of a scheduled firing's form is refused unless
        ``channel`` is beat's. With a ``sender``, the ids it gives (the message id, and
        ``correlation_id`` when ``correlation_given``) are placed in its namespace
        (``integration.ownership``)."""
        envelope = parse_envelope(raw, self.limits, loc)
        if envelope.id.startswith(FIRING_ID_PREFIX) and channel != FIRING_CHANNEL:
            raise invalid([{"loc": [*loc, "id"], "type": "reserved_id",
                            "msg": f"ids starting with {FIRING_ID_PREFIX!r} are reserved for "
                                   "scheduled firings"}], "The message id is reserved.")
        if sender is not None:
            self._in_namespace(envelope, raw, sender, loc,
                               correlation_id if correlation_given else None)
        if correlation_id and "correlationid" not in raw and not correlation_given:
            envelope.correlationid = correlation_id  # the request's chain (made here)
        message_type = registered_type(envelope, self.registry, loc)
        if message_type.internal:
            raise Forbidden(f"submit:{envelope.type}",
                            f"{envelope.type!r} messages are made by the service only.")
        if may_submit is None and sender is not None and sender.grants is not None:
            may_submit = sender.grants.may_submit
        if may_submit is not None and not may_submit(envelope.type):
            raise Forbidden(f"submit:{envelope.type}")
        valid_payload(envelope, message_type, loc)
        return envelope

    def _in_namespace(self, envelope: Envelope, raw: dict[str, Any], sender: Sender,
                      loc: Sequence[str | int], correlation: str | None) -> None:
        """The sender's ids in its namespace: the message id it gave, and each link it gave
        (``correlationid``, ``causationid``, or the request's correlation header) unless it
        names a message the sender may read or receive. A link to anything else is the
        sender's own id, so naming another owner's message neither grafts onto its chain
        nor tells whether it exists."""
        given = raw.get("id")
        if isinstance(given, str):
            if len(given) > CLIENT_ID_MAX:
                raise invalid([{"loc": [*loc, "id"], "type": "string_too_long",
                                "msg": f"at most {CLIENT_ID_MAX} characters"}],
                              "The envelope is invalid.")
            envelope.id = scoped(sender.subject, given)
        links: dict[str, str] = {}
        for name in ("correlationid", "causationid"):
            value = raw.get(name)
            if name == "correlationid" and value is None:
                value = correlation
            if isinstance(value, str):
                if len(value) > CLIENT_ID_MAX:
                    raise invalid([{"loc": [*loc, name], "type": "string_too_long",
                                    "msg": f"at most {CLIENT_ID_MAX} characters"}],
                                  "The envelope is invalid.")
                links[name] = value
        if links:
            resolved = self._resolve_links(sender, set(links.values()))
            for name, value in links.items():
                setattr(envelope, name, resolved[value])
        if "correlationid" not in links:
            envelope.correlationid = envelope.id  # its own chain, by its scoped id

    def _resolve_links(self, sender: Sender, values: set[str]) -> dict[str, str]:
        """Each given link's id: the sender's own message by its own id, a message it may
        link to by its id, or else the sender's namespaced id (one round trip)."""
        own = {value: scoped(sender.subject, value) for value in values}
        found = self.store.link_targets([*own.values(), *values])
        resolved = {}
        for value in values:
            target = found.get(value)
            if found.get(own[value]) is None and target is not None and \
                    sender.may_link(*target):
                resolved[value] = value
            else:
                resolved[value] = own[value]
        return resolved

    def submit(self, envelopes: Sequence[Envelope], *, owner: str, channel: str,
               answer: IdempotentAnswer | None = None,
               hit: RateHit | None = None) -> list[Result]:
        """Record and enqueue, in order; an item is ``Accepted`` only once it is in the broker.
        Types whose queue is over ``max_queue_depth`` are refused with 503 (backpressure).

        ``answer`` (one message, and only where ``completes_answers``) completes the request's
        idempotency key in the same transaction as its message; the caller need not.
        ``hit`` (one message, and only where ``counts_limits``) is the request's rate-limit
        hit, counted first in the same transaction: over the limit, the message is
        ``RateLimited`` and nothing is written. ``hit_counted`` tells whether it was."""
        full = self._full_queues({self.registry.get(e.type).queue for e in envelopes})
        if full:
            results: list[Result] = []
            admitted = [e for e in envelopes if self.registry.get(e.type).queue not in full]
            outcomes = iter(self.submit(admitted, owner=owner, channel=channel))
            for envelope in envelopes:
                queue = self.registry.get(envelope.type).queue
                results.append(self._unavailable(
                    f"The {queue!r} queue holds {full[queue]} messages, over its limit; "
                    "retry later.") if queue in full else next(outcomes))
            return results
        results = self._submit(envelopes, owner=owner, channel=channel, answer=answer, hit=hit)
        for result in results:  # count what was just added until the next fresh reading
            if isinstance(result, Accepted) and result.queue in self._depths:
                seen, depth = self._depths[result.queue]
                self._depths[result.queue] = (seen, depth + 1)
        return results

    def _full_queues(self, queues: set[str]) -> dict[str, int]:
        """Queues over the depth limit, from counts at most a second old (one round trip)."""
        if self.max_queue_depth is None or not queues:
            return {}
        now = time.monotonic()
        stale = [q for q in queues if now - self._depths.get(q, (-1.0, 0))[0] > 1.0]
        if stale:
            try:
                for queue, depth in self.publisher.queue_depths(stale).items():
                    self._depths[queue] = (now, depth)
            except Exception:  # noqa: BLE001 - the publish itself will report the broker
                return {}
        return {q: self._depths[q][1] for q in queues
                if q in self._depths and self._depths[q][1] >= self.max_queue_depth}

    @property
    def completes_answers(self) -> bool:
        """Whether ``submit`` stores a single message's idempotent answer itself."""
        return self.fused

    @property
    def counts_limits(self) -> bool:
        """Whether ``submit`` counts a single message's rate-limit hit in its transaction
        (the budget's keys must be on the store's Redis, as the gateway's limiter's are)."""
        return self.fused

    def _submit(self, envelopes: Sequence[Envelope], *, owner: str, channel: str,
                answer: IdempotentAnswer | None = None,
                hit: RateHit | None = None) -> list[Result]:
        if not envelopes:
            return []
        context = tracing.current()  # taken here: the coalescer's flush may run elsewhere
        if context is not None:
            for envelope in envelopes:
                envelope.continues(context)
        with tracing.span("enqueue", "producer",
                          attributes={"messaging.batch.message_count": len(envelopes)}):
            return self._enqueue(envelopes, owner, channel, answer, hit)

    def _enqueue(self, envelopes: Sequence[Envelope], owner: str, channel: str,
                 answer: IdempotentAnswer | None, hit: RateHit | None) -> list[Result]:
        single = len(envelopes) == 1 and self.fused
        request = _Request(envelopes, owner, channel, answer if single else None,
                           hit if single else None)
        # A request that fills a flush by itself gains nothing from sharing one; waiting for
        # the flush in progress (through its Redis round trip) would only idle the process.
        if self.coalescer is not None and len(envelopes) < self.coalescer.max_size:
            return self.coalescer.run(request)
        return self._submit_together([request])[0]

    def _submit_together(self, requests: Sequence[_Request]) -> list[list[Result]]:
        """Record and enqueue the messages of several requests in one go (the coalescer's
        flush); one list of results per request, each item's result its own. A message the
        store cannot write is refused on its own before anything is written, so it never
        fails the messages it would have shared a transaction with."""
        refused: list[Result | None] = []
        records: list[NewRecord] = []
        answers: list[IdempotentAnswer | None] = []
        hits: list[RateHit | None] = []
        for r in requests:
            for e in r.envelopes:
                record = self._record(e, r)
                refused.append(record if isinstance(record, InvalidMessage) else None)
                if isinstance(record, NewRecord):
                    records.append(record)
                    answers.append(r.answer)
                    hits.append(r.hit)
        written = iter(self._record_and_enqueue(records, answers, hits))
        results = [problem if problem is not None else next(written) for problem in refused]
        grouped, start = [], 0
        for r in requests:
            grouped.append(results[start:start + len(r.envelopes)])
            start += len(r.envelopes)
        return grouped

    def _record(self, envelope: Envelope, request: _Request) -> NewRecord | InvalidMessage:
        """The message's new record, encoded as the store writes it; or why the store cannot
        write it. Parsed messages were checked by the limits already: this catches messages
        built by code (a handler's emitted messages, a library caller's envelopes)."""
        wire: dict[str, Any] = {}
        try:
            wire = envelope.to_wire()
            record = NewRecord(id=envelope.id, type=envelope.type,
                               queue=self.registry.get(envelope.type).queue, envelope=wire,
                               owner=request.owner, channel=request.channel)
            _ = record.envelope_json  # encoded now, and kept for the write
        except (TypeError, ValueError) as exc:  # orjson's JSONEncodeError is a TypeError
            log.warning("message %s refused: the store cannot write it (%s)", envelope.id, exc)
            errors = self.limits.errors(wire) or [
                {"loc": [], "msg": f"cannot be written as JSON: {exc}", "type": "unstorable"}]
            return invalid(errors, "The message holds a value the store cannot write.")
        return record

    def _record_and_enqueue(self, records: list[NewRecord],
                            answers: list[IdempotentAnswer | None],
                            hits: list[RateHit | None]) -> list[Result]:
        results = self._write(records, answers, hits)
        # One wait per flush, after all its writes (WAIT cannot run inside the script).
        if self.replica_wait is not None and \
                any(isinstance(r, Accepted) for r in results) and \
                not self.replica_wait.replicated():
            return [Unreplicated(r, self.retry_after) if isinstance(r, Accepted) else r
                    for r in results]
        return results

    def _write(self, records: list[NewRecord], answers: list[IdempotentAnswer | None],
               hits: list[RateHit | None]) -> list[Result]:
        request = uuid.uuid4().hex
        if self.fused:
            return self._create_queued(records, request, answers, hits)
        try:
            created = self.store.create_many(records, request)
        except Exception:  # noqa: BLE001 - store unreachable: nothing was enqueued
            log.warning("status store unavailable; %d message(s) refused", len(records),
                        exc_info=True)
            # The transaction may have been applied before the connection broke.
            self._discard(records, request)
            return [self._unavailable("The status store (Redis) is unreachable; the message "
                                      "was not enqueued.", unreachable="store")] * len(records)

        slots: list[Result | None] = [
            None if ok else Conflict("A message with this id already exists.")
            for ok in created
        ]
        fresh = [record for record, ok in zip(records, created, strict=True) if ok]
        outcome = self.publisher.publish(
            [Outgoing(r.id, r.envelope, r.queue, r.envelope_json) for r in fresh]
        )
        # Messages in doubt (written, confirms lost) keep their records, as queued: if the
        # broker holds one, its worker finds the record; if not, the reconciler sends it.
        kept = [r for i, r in enumerate(fresh) if outcome.sent(i) or outcome.in_doubt(i)]
        unsent = [r for i, r in enumerate(fresh)
                  if not outcome.sent(i) and not outcome.in_doubt(i)]
        if outcome.error is not None:
            log.warning("broker unavailable; %d of %d message(s) not enqueued, %d in doubt: "
                        "%s", len(unsent), len(fresh), len(outcome.doubtful), outcome.error)
        self._settle(kept, unsent, request)

        problem = self._unavailable("The broker is unreachable; the message was not enqueued.",
                                    unreachable="broker")
        answers_of_fresh = iter([Accepted(r.id, r.queue) if outcome.sent(i) else
                                 InDoubt(Accepted(r.id, r.queue), self.retry_after,
                                         recorded=True)
                                 if outcome.in_doubt(i) else problem
                                 for i, r in enumerate(fresh)])
        for index, result in enumerate(slots):
            if result is None:
                slots[index] = next(answers_of_fresh)
        return [r for r in slots if r is not None]

    def _create_queued(self, records: list[NewRecord], request: str,
                       answers: list[IdempotentAnswer | None],
                       hits: list[RateHit | None]) -> list[Result]:
        """Broker on the store's Redis: each chunk's records and messages in one transaction,
        so a message is accepted exactly when its chunk's ``EXEC`` returned."""
        results: list[Result] = []
        size = self.publisher.chunk_size
        for start in range(0, len(records), size):
            chunk = records[start:start + size]
            try:
                messages = [self.publisher.redis_message(
                    Outgoing(r.id, r.envelope, r.queue, r.envelope_json)) for r in chunk]
            except Exception:  # noqa: BLE001 - a fault of ours: answered, never a 500 midway
                log.exception("broker messages could not be built; %d message(s) not "
                              "enqueued", len(records) - start)
                return results + [self._unavailable(
                    "The message could not be enqueued.")] * (len(records) - start)
            try:
                created = self.record_and_enqueue.create_queued_many(
                    chunk, messages, request, answers[start:start + size],
                    hits[start:start + size])
            except Exception as exc:  # noqa: BLE001 - this chunk and the rest are refused
                problem = self._unavailable(
                    "The broker (the status store's Redis) is unreachable; the message was "
                    "not enqueued.", unreachable="broker")
                if isinstance(exc, ReplyLost):
                    # The chunk's transaction ran entirely or not at all, nobody can tell
                    # which: its records stay (a resubmission is recognised, never run
                    # twice); the chunks after it were not sent.
                    log.warning("broker lost while %d message(s) were being enqueued; they "
                                "may have been: %s", len(chunk), exc)
                    self._discard(records[start + size:], request, Status.QUEUED)
                    return results + [InDoubt(Accepted(r.id, r.queue), self.retry_after,
                                              recorded=False) for r in chunk] + \
                        [problem] * (len(records) - start - len(chunk))
                log.warning("broker unavailable; %d of %d message(s) not enqueued: %s",
                            len(records) - start, len(records), exc)
                # The transaction may have been applied before the connection broke.
                self._discard(records[start:], request, Status.QUEUED)
                return results + [problem] * (len(records) - start)
            results += [Repeated(ok.value) if isinstance(ok, EarlierAnswer) else
                        RateLimited() if isinstance(ok, OverLimit) else
                        Accepted(r.id, r.queue) if ok else
                        Conflict("A message with this id already exists.")
                        for r, ok in zip(chunk, created, strict=True)]
        return results

    def submit_each(self, items: Sequence[Item], parse: Callable[[int, Item], Envelope | Own], *,
                    owner: str, channel: str) -> list[Result | Own]:
        """Parse each item, submit the envelopes together, and answer one result per item, in
        order: the ``Problem`` that ``parse`` raised for it, what ``parse`` returned when that
        is not an envelope (an entry's own outcome, such as a duplicate), or its submission's.
        Every entry that takes several messages at once goes through here."""
        results: list[Result | Own | None] = [None] * len(items)
        valid: list[tuple[int, Envelope]] = []
        for index, item in enumerate(items):
            try:
                parsed = parse(index, item)
            except Problem as problem:
                results[index] = problem
                continue
            if isinstance(parsed, Envelope):
                valid.append((index, parsed))
            else:
                results[index] = parsed
        outcomes = self.submit([e for _, e in valid], owner=owner, channel=channel)
        for (index, _), outcome in zip(valid, outcomes, strict=True):
            results[index] = outcome
        return [r for r in results if r is not None]

    def submit_raw(self, items: Sequence[Any], *, owner: str, channel: str,
                   may_submit: Callable[[str], bool] | None = None,
                   correlation_id: str | None = None, sender: Sender | None = None,
                   correlation_given: bool = False) -> list[Result]:
        """Validate and submit a batch of raw items: one result per item, in order; an invalid
        item's errors are located by its index."""
        def parse(index: int, item: Any) -> Envelope:
            return self.parse(item, loc=[index], may_submit=may_submit,
                              correlation_id=correlation_id, channel=channel, sender=sender,
                              correlation_given=correlation_given)

        return self.submit_each(items, parse, owner=owner, channel=channel)

    def _settle(self, sent: list[NewRecord], unsent: list[NewRecord], request: str) -> None:
        """Mark sent (and in-doubt) messages queued and drop the records of unsent ones;
        neither may fail the answer: what is in the broker is accepted whatever the store
        says."""
        try:
            self.store.mark_queued_many([r.id for r in sent])
        except Exception:  # noqa: BLE001
            log.warning("could not mark %d message(s) queued", len(sent), exc_info=True)
        self._discard(unsent, request)

    def _discard(self, records: Sequence[NewRecord], request: str,
                 status: Status = Status.ACCEPTED) -> None:
        try:
            self.store.discard_many(records, request, status)
        except Exception:  # noqa: BLE001 - the records expire with their TTL
            log.warning("could not discard %d unsent record(s)", len(records), exc_info=True)

    def _unavailable(self, detail: str, **extensions: str) -> Unavailable:
        return Unavailable(detail, retry_after=self.retry_after, **extensions)


__all__ = ["Accepted", "InDoubt", "RateLimited", "Repeated", "Result", "Sender", "Submitter",
           "Uncertain", "Unreplicated", "hit_counted"]
