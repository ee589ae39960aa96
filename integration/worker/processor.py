"""Process one delivered message: validate again, run its type's handler, record, publish the event.

Runs inside the Celery task but knows nothing of Celery, so it is tested without a broker.
Direct callers bypass the gateway, so everything is validated again here, by the rules the
gateway checks (``integration.messages.validation``).

One module because every step of a delivery (claim, guards, handler, retry, finish) reads and
writes the same record and the same notes for the delivery's outcome.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from integration import logs, tracing
from integration.events.consumers import (
    EVENT_CHANNEL,
    ConsumerContext,
    Subscription,
    emitting,
    is_delivery_topic,
)
from integration.events.dispatch import Dispatcher, Fanout
from integration.events.results import finish, result_event
from integration.messages import effects
from integration.messages.envelope import ID_PATTERN, Envelope, new_id, utc_now
from integration.messages.jsonlimits import JsonLimits
from integration.messages.problems import InvalidMessage, error_message
from integration.messages.registry import Registry
from integration.messages.retry import PermanentError, RetryPolicy, classify
from integration.messages.status import STARTABLE, Status
from integration.messages.validation import validate
from integration.store.model import (
    Begun,
    ClaimLost,
    DeliveryState,
    InlineDelivery,
    NewRecord,
    Transition,
)
from integration.store.records import StatusStore
from integration.worker.claims import ClaimKeeper
from integration.worker.guards import Deferred, Guards, Held

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """What the broker said about this delivery."""

    task_id: str
    queue: str | None = None
    redelivered: bool = False


@dataclass(frozen=True, repr=False)
class Outcome:
    """Where one delivery left its message, with what metrics and logs need (bounded labels).

    The processing task returns it. Celery writes every task's result with its ``saferepr``
    (for its log line and the ``task-succeeded`` event), which walks a dict item by item; on
    an object it is the object's ``repr``, here the same text as the dict's."""

    status: Status
    type: str
    channel: str
    error: str | None = None  # the exception's class name, when it failed
    attempt: int | None = None  # which attempt this delivery was, when one started
    waited: float | None = None  # seconds in the queue before this attempt started
    total: float | None = None  # seconds from acceptance to a final status
    #: The types of the deliveries that ran inline after it, each one succeeded.
    inline: tuple[str, ...] = ()
    #: Its last write was refused: its claim had lapsed (``status`` is the record's now).
    fenced: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if k == "status" else list(v) if k == "inline" else v
                for k, v in self.__dict__.items()}

    def __repr__(self) -> str:
        return repr(self.to_json())


class Processor:
    def __init__(self, registry: Registry, store: StatusStore,
                 limits: JsonLimits | None = None, retry: RetryPolicy | None = None,
                 claim_lease: int = 30, guards: Guards | None = None,
                 dispatcher: Dispatcher | None = None, outbox_grace: float = 30.0) -> None:
        self.guards = guards
        self.dispatcher = dispatcher
        self.outbox_grace = outbox_grace
        self._notes: dict[str, Any] = {}
        self.registry = registry
        self.store = store
        self.limits = limits or JsonLimits()
        self.retry = retry or RetryPolicy()
        self.claim_lease = claim_lease
        self.claims = ClaimKeeper(store.renew_claim, claim_lease)

    def process(self, raw: Any, delivery: Delivery) -> Outcome:
        """Take one delivery as far as it goes; what happened is returned for metrics and logs.

        One delivery at a time per processor (a prefork pool process runs one task at a time).
        """
        self._notes = {}
        try:
            status = self._process(raw, delivery)
        except ClaimLost as lost:
            status = self._fenced(lost)
        notes = self._notes
        accepted = notes.get("accepted")
        return Outcome(
            status=status, type=notes.get("type", "unknown"),
            channel=notes.get("channel", "direct"), error=notes.get("error"),
            attempt=notes.get("attempt"), waited=notes.get("waited"),
            total=time.time() - accepted if accepted and status.final and not
            notes.get("fenced") else None,
            inline=tuple(notes.get("inline", ())), fenced=bool(notes.get("fenced")))

    def _process(self, raw: Any, delivery: Delivery) -> Status:
        try:
            envelope, payload = validate(raw, self.registry, self.limits)
        except InvalidMessage as problem:
            return self._reject(raw, delivery, problem.extensions["errors"])

        message_type = self.registry.get(envelope.type)
        if message_type.internal:
            refusal = self._not_made_here(envelope.id, raw)
            if refusal is not None:
                # A direct caller can reach the worker: it must not make the service sign or
                # deliver what it wants. Nothing is recorded under an id it chose.
                log.warning("%s delivery %s refused: %s", envelope.type, envelope.id, refusal)
                self._notes.update(type=envelope.type, error="NotMadeByTheService")
                return Status.DEAD
        policy = message_type.retry or self.retry
        target = message_type.target(payload) if message_type.target else None
        # Guards run between the claim and the attempt (a deferral spends none): with none
        # to run, the claim and the move to processing are one step.
        guarded = bool(target and self.guards)
        # The claim keeps two deliveries of one message (a redelivery while the first still
        # runs, or after its worker died) from running the effect side by side.
        holder = f"{delivery.task_id}:{new_id()[:12]}"
        begun, state = self._begin(envelope, message_type.queue, delivery, holder,
                                   start=not guarded)
        current, generation, released = state.status, state.generation, state.released
        self._notes.update(type=envelope.type, channel=state.channel, accepted=state.accepted,
                           queued=state.queued, owner=state.owner)
        if current is not None and current not in STARTABLE:
            log.info("message %s is already %s; delivery skipped", envelope.id, current)
            return Status(current)

        if not begun.claimed:
            wait = begun.claim_remaining + 1
            self.store.hold_back(envelope.id, wait, detail={
                "note": "another delivery holds the claim", "retry_in": round(wait, 1)})
            log.info("message %s is claimed by another delivery; retried in %.0f s",
                     envelope.id, wait)
            return Status.PROCESSING

        try:
            with self.claims.holding(envelope.id, generation, holder), \
                    self._admitted(target) as call:
                if target and message_type.action_key and self.guards:
                    self.guards.check_storm(message_type.action_key(payload), target,
                                            override=released)
                return self._run(envelope, payload, delivery, policy, generation, holder, call,
                                 begun.started)
        except Deferred as wait:
            self._defer(envelope.id, wait, generation, holder)
            return Status.DEFERRED
        except Held as hold:
            # The claim is released with the hold: a release by an operator runs it again.
            self._finish(envelope.id, envelope.type, Status.HELD, envelope, "hold",
                         {"reason": str(hold)}, claim=(generation, holder))
            log.warning("message %s held: %s", envelope.id, hold)
            return Status.HELD

    def _fenced(self, lost: ClaimLost) -> Status:
        """A delivery cut off from the store (a partition, a paused process) came back after
        its claim lapsed: its finish, retry or deferral was refused, so the delivery that
        took the message over is the only one recorded."""
        self._notes["fenced"] = True
        log.warning("late %s of message %s refused (fenced): its claim on generation %d "
                    "lapsed; the message is %s", lost.refused or "write", lost.message_id,
                    lost.generation, lost.status or "gone")
        return Status(lost.status) if lost.status else Status.PROCESSING

    def revoke(self, raw: Any, delivery: Delivery, reason: str) -> Status | None:
        """Celery revoked this delivery (an operator, an expiry): the message ends ``dead``
        with a ``Revoked`` error, so it shows in the dead letters instead of staying queued."""
        return self._give_up(raw, delivery, {
            "type": "Revoked", "reason": reason,
            "message": f"the Celery task was {reason} before it could finish"})

    def delivery_limit_exceeded(self, raw: Any, delivery: Delivery, limit: int
                                ) -> Status | None:
        """RabbitMQ dead-lettered the message: more than ``limit`` of its deliveries ended
        without an answer (each killed its worker before the attempt was counted, or was
        handed back). It ends ``dead``, replayable, without running again."""
        return self._give_up(raw, delivery, {
            "type": "DeliveryLimitExceeded", "limit": limit,
            "message": f"RabbitMQ delivered it more than {limit} times without an answer "
                       "(workers lost, or the store unreachable)"})

    def _give_up(self, raw: Any, delivery: Delivery, error: dict[str, Any]) -> Status | None:
        """The message ends ``dead`` with ``error`` unless it has no record or is final."""
        raw_map = raw if isinstance(raw, Mapping) else {}
        message_id = _usable_id(raw_map.get("id")) or _usable_id(delivery.task_id)
        if message_id is None:
            return None
        current = self.store.status_of(message_id)
        if current is None or Status(current).final:
            return None
        raw_type = raw_map.get("type")
        message_type = raw_type if isinstance(raw_type, str) and raw_type in self.registry \
            else "unknown"
        correlation = _usable_id(raw_map.get("correlationid"))
        self._notes = {"owner": self.store.delivery_state(message_id).owner,
                       "type": message_type}
        self._finish(message_id, message_type, Status.DEAD, None, "error", error,
                     correlation=correlation)
        return Status.DEAD

    def _admitted(self, target: str | None) -> Any:
        """The target's breaker admission, or a plain call when there is no target."""
        if target and self.guards:
            return self.guards.breaker(target).admitted()
        return nullcontext(lambda func: func())

    def _begin(self, envelope: Envelope, queue: str, delivery: Delivery, holder: str, *,
               start: bool) -> tuple[Begun, DeliveryState]:
        """The delivery state and the claim (and with ``start``, the attempt's start) in one
        round trip; a message sent straight to the task gets its record first."""
        for _ in range(2):
            begun = self.store.begin(
                envelope.id, holder, self.claim_lease, startable=STARTABLE, start=start,
                fields=_start_fields(delivery), detail=_start_detail(delivery))
            if begun.state is not None:
                return begun, begun.state
            self._ensure_record(envelope, queue)
        raise RuntimeError(f"the record of {envelope.id} vanished as it was created")

    def _run(self, envelope: Envelope, payload: Any, delivery: Delivery, policy: RetryPolicy,
             generation: int, holder: str, call: Callable[[Callable[[], Any]], Any],
             started: Transition | None = None) -> Status:
        message_type = self.registry.get(envelope.type)
        if started is None:
            started = self.store.transition(
                envelope.id, Status.PROCESSING, allowed_from=STARTABLE, count_attempt=True,
                fields=_start_fields(delivery),
                detail={**_start_detail(delivery), "generation": generation},
            )
        if started is None or not started.applied:
            self.store.release_claim(envelope.id, generation, holder)
            previous = started.previous if started else None
            log.info("message %s is already %s; delivery skipped", envelope.id, previous)
            return Status(previous) if previous else Status.DEAD
        self._notes["attempt"] = started.attempts
        logs.bind(attempt=started.attempts)
        if self._notes.get("queued"):
            self._notes["waited"] = max(0.0, time.time() - self._notes["queued"])
        if started.attempts > policy.max_attempts:
            # Earlier attempts started and never finished: the message keeps killing workers.
            error = {"type": "AttemptsExhausted", "attempts": started.attempts - 1,
                     "message": f"{started.attempts - 1} attempts started without finishing "
                                "(worker lost or timed out)"}
            self._finish(envelope.id, envelope.type, Status.DEAD, envelope, "error", error,
                         claim=(generation, holder))
            return Status.DEAD

        try:
            result = call(lambda: self._handle(message_type.handler, payload, envelope,
                                                   generation))
        except Exception as exc:  # noqa: BLE001 - a handler's failure is recorded, not raised
            return self._failed(envelope, exc, started.attempts, policy, generation, holder)

        self._finish(envelope.id, envelope.type, Status.SUCCEEDED, envelope, "result",
                     dict(result or {}), claim=(generation, holder))
        return Status.SUCCEEDED

    def _handle(self, handler: Any, payload: Any, envelope: Envelope, generation: int) -> Any:
        """Run the handler as ``(message, generation)`` (the key of its effects), with
        ``emit`` bound for this message when something can submit."""
        with tracing.span("handler", "internal", attributes={"integration.type": envelope.type}), \
                effects.running(envelope.id, generation):
            if self.dispatcher is None:
                return handler(payload, envelope)
            with emitting(self.dispatcher.emitter(envelope,
                                                  self._notes.get("owner", "direct"))):
                return handler(payload, envelope)

    def _defer(self, message_id: str, wait: Deferred, generation: int, holder: str) -> None:
        """Wait without spending an attempt (breaker open, rate limit reached)."""
        due = utc_now() + timedelta(seconds=wait.retry_in)
        self.store.schedule(message_id, Status.DEFERRED, wait.retry_in,
                            fields={"deferred_reason": wait.reason,
                                    "next_attempt_at": due.isoformat()},
                            detail={"reason": wait.reason, "retry_in": round(wait.retry_in, 3)},
                            claim=(generation, holder))
        log.info("message %s deferred %.1f s: %s", message_id, wait.retry_in, wait.reason)

    def _failed(self, envelope: Envelope, exc: Exception, attempt: int, policy: RetryPolicy,
                generation: int, holder: str) -> Status:
        """Retry a transient failure later, or end the message dead."""
        kind = classify(exc)
        self._notes["error"] = type(exc).__name__
        # The record, the API and the events carry the error's class and text; its traceback
        # (file paths, code) is for the worker's log only.
        log.warning("message %s attempt %d failed: %s", envelope.id, attempt,
                    type(exc).__name__, exc_info=exc)
        error = {
            "type": type(exc).__name__,
            "message": error_message(exc),
            "kind": kind,
            "attempt": attempt,
        }
        if kind == "permanent" or attempt >= policy.max_attempts:
            if kind == "transient":
                error["exhausted"] = f"{attempt} of {policy.max_attempts} attempts failed"
            self._finish(envelope.id, envelope.type, Status.DEAD, envelope, "error", error,
                         claim=(generation, holder))
            return Status.DEAD
        delay = policy.delay(attempt)
        due = utc_now() + timedelta(seconds=delay)
        self.store.schedule(
            envelope.id, Status.RETRYING, delay,
            fields={"last_error": error, "next_attempt_at": due.isoformat()},
            detail={"error": error, "retry_in": round(delay, 3)},
            claim=(generation, holder),
        )
        log.info("message %s attempt %d failed (%s); retry in %.1f s", envelope.id, attempt,
                 error["type"], delay)
        return Status.RETRYING

    # -- steps ----------------------------------------------------------------------------
    def _not_made_here(self, message_id: str, raw: Any) -> str | None:
        """Why a delivery of an internal type is not the one the service made (None: it is):
        the service records its deliveries (channel ``event``) before sending them, and the
        worker runs only the envelope it recorded."""
        channel, stored = self.store.recorded_envelope(message_id)
        if stored is None:
            return "the service made no such delivery"
        if channel != EVENT_CHANNEL:
            return "the message was not made by the service"
        if stored != dict(raw):
            return "its envelope differs from the one the service recorded"
        return None

    def _ensure_record(self, envelope: Envelope, queue: str) -> None:
        """A message sent straight to the task has no record yet: create it (channel direct)."""
        self.store.create_many([NewRecord(
            id=envelope.id, type=envelope.type, queue=queue, envelope=envelope.to_wire(),
            owner="direct", channel="direct", status=Status.QUEUED,
        )])

    def _reject(self, raw: Any, delivery: Delivery, errors: list[dict[str, Any]]) -> Status:
        raw_map = raw if isinstance(raw, Mapping) else {}
        message_id = _usable_id(raw_map.get("id")) or delivery.task_id
        raw_type = raw_map.get("type")
        message_type = raw_type if isinstance(raw_type, str) and raw_type in self.registry \
            else "unknown"
        self.store.create_many([NewRecord(
            id=message_id, type=message_type, queue=delivery.queue or "",
            envelope=raw_map if self._storable(raw_map) else {}, owner="direct",
            channel="direct",
            status=Status.QUEUED,
        )])
        error = {"type": "ValidationError", "message": "the message failed validation",
                 "errors": errors}
        self._notes.update(type=message_type, error="ValidationError")
        current = self.store.status_of(message_id)
        if current is not None and current not in STARTABLE:
            log.warning("invalid delivery for finished message %s ignored", message_id)
            return Status(current)
        self._finish(message_id, message_type, Status.DEAD, None, "error", error)
        log.warning("message %s rejected by the worker: %d validation error(s)",
                    message_id, len(errors))
        return Status.DEAD

    def _storable(self, value: Mapping[str, Any]) -> bool:
        """Whether a rejected envelope can be kept as it came: within the JSON limits, and
        written by the store's own encoder."""
        if self.limits.errors(dict(value)):
            return False
        try:
            orjson.dumps(value)
        except (TypeError, ValueError):
            return False
        return True

    def _finish(self, message_id: str, message_type: str, outcome: Status,
                envelope: Envelope | None, field: str, value: dict[str, Any], *,
                correlation: str | None = None, claim: tuple[int, str] | None = None) -> None:
        """Record the outcome and its event on ``<type>.<outcome>`` (and release ``claim``),
        with the deliveries to the consumers that run inline, which ran just before; then
        deliver the event to its other subscribers (parked in the outbox first, so a crash
        or a broker failure in between only delays those deliveries).

        The event's id is derived from the message, its generation and the outcome: a
        redelivery after a crash before the recording makes the same event, so the inline
        consumers run again under the same delivery ids and effect keys.

        Whether the event has subscribers comes from the webhook subscriptions last read;
        the recording checks, in the same step, that they have not changed since (else they
        are read again and the recording retried), which saves a read per message."""
        topic = f"{message_type}.{outcome}"
        dispatcher = self.dispatcher
        correlation = (envelope.correlationid if envelope else correlation) or message_id
        owner = self._notes.get("owner", "direct")
        event = result_event(message_id, topic, outcome, correlation, {field: value},
                             generation=claim[0] if claim is not None else None)
        fanout = Fanout(message_id, owner, topic, event, correlation)
        ran: dict[str, InlineDelivery] | None = None
        queued = False
        only_if: tuple[str, bytes | None] | None = None
        for attempt in range(3):
            wants, only_if = dispatcher.wants_cached(topic) if dispatcher else (False, None)
            if attempt == 2 and dispatcher is not None:  # changing under us: read, then write
                wants, only_if = dispatcher.wants(topic), None
            pending = dispatcher is not None and wants and not _second_hop(topic, envelope)
            inline = dispatcher.inline_for(topic) if dispatcher and pending else []
            if inline and ran is None:
                # Inline consumers have effects of their own: none for a delivery fenced off
                # (asked of Redis only when this process cannot be sure it holds the claim).
                if claim is not None and not self.claims.fresh(message_id, claim[0]) and \
                        not self.store.renew_claim(message_id, *claim, self.claim_lease):
                    raise ClaimLost(message_id, claim[0], self.store.status_of(message_id),
                                    str(outcome))
                ran = self._run_inline(fanout, inline)
            done = ran or {}
            queued = pending and dispatcher is not None and \
                dispatcher.has_queued(topic, ran_inline=done)
            written = finish(self.store, message_id, message_type, outcome, correlation, field,
                             value, outbox_in=self.outbox_grace if queued else None,
                             claim=claim, only_if=only_if, event=event,
                             inline=list(done.values()), owner=owner)
            if written is not None:
                break
            if dispatcher is not None:
                dispatcher.refresh_subscriptions()
        else:
            return
        if ran:
            self._notes["inline"] = [d.type for d in ran.values()]
        if not queued or dispatcher is None:
            return
        try:
            dispatcher.dispatch(fanout, fresh=only_if is None, ran_inline=ran or {})
        except (PermanentError, ValidationError) as exc:
            log.error("deliveries of %s on %s abandoned: %s", message_id, topic, exc)
        except Exception as exc:  # noqa: BLE001 - the outbox delivers it later
            log.warning("deliveries of %s on %s delayed: %s", message_id, topic, exc)
            return
        self.store.clear_outbox(message_id)

    def _run_inline(self, fanout: Fanout,
                    inline: list[Subscription]) -> dict[str, InlineDelivery]:
        """Run the consumers that may run here on the event, each as its delivery would (its
        id, the key of its effects, ``emit``), by subscription name. One that fails is left
        out: its delivery goes out as a message of its own, with retries."""
        dispatcher = self.dispatcher
        assert dispatcher is not None
        done: dict[str, InlineDelivery] = {}
        for subscription in inline:
            raw = dispatcher.delivery(fanout, subscription)
            envelope = Envelope.model_construct(**raw)  # made here, valid by construction
            emit = dispatcher.emitter(envelope, fanout.owner)
            try:
                with tracing.span("consumer", "internal", attributes={
                        "integration.subscription": subscription.name}), \
                        effects.running(envelope.id, 1), emitting(emit):
                    result = subscription(dict(fanout.event),
                                          ConsumerContext(envelope, fanout.topic, emit))
            except Exception as exc:  # noqa: BLE001 - it goes out as a delivery message
                log.warning("inline delivery %s to %s failed (%s: %s); sent as a message",
                            envelope.id, subscription.name, type(exc).__name__, exc)
                continue
            # The record names the event rather than carrying it (the cause's trace has it).
            kept = {**raw, "data": {"topic": fanout.topic, "event_id": fanout.event.get("id")}}
            done[subscription.name] = InlineDelivery(
                envelope.id, subscription.type_name, subscription.type_name, kept,
                dict(result) if result else {"consumed": fanout.topic})
        return done


def _start_fields(delivery: Delivery) -> dict[str, Any]:
    """What an attempt's start records on the message."""
    return {"task_id": delivery.task_id, "delivered_queue": delivery.queue or ""}


def _start_detail(delivery: Delivery) -> dict[str, Any]:
    """What an attempt's start notes in the history (``begin`` adds the generation)."""
    return {"queue": delivery.queue, "redelivered": delivery.redelivered}


def _second_hop(topic: str, envelope: Envelope | None) -> bool:
    """A delivery that consumed the event of another delivery publishes no further deliveries:
    two consumers of ``consumer.*`` would otherwise feed each other forever."""
    consumed = envelope.data.get("topic") if envelope is not None else None
    return is_delivery_topic(topic) and isinstance(consumed, str) and \
        is_delivery_topic(consumed)


def _usable_id(value: Any) -> str | None:
    return value if isinstance(value, str) and re.match(ID_PATTERN, value) else None


