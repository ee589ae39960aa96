"""Delivering result events to subscribers, and messages that consumers emit.

When a message ends a step, its event on ``<type>.<outcome>`` becomes one delivery message per
matching subscription (a code consumer, or a webhook), each on its own queue. Delivery ids are
derived from the event's message and the subscriber, so delivering again (after a crash, from
the outbox) never delivers twice: at least once into the broker, effect once in the consumer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from integration.broker.publisher import Outgoing
from integration.broker.submission import Accepted, Submitter
from integration.events.consumers import EVENT_CHANNEL, Emit, Subscription
from integration.messages.envelope import Envelope, derived_id
from integration.messages.problems import Conflict, Forbidden, InvalidMessage, Problem
from integration.messages.retry import PermanentError, TransientError
from integration.messages.status import Status
from integration.messages.tracecontext import TRACE_ATTRIBUTES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fanout:
    """A finished message's event, to deliver to the subscriptions of its topic."""

    message_id: str
    owner: str
    topic: str
    event: Mapping[str, Any]
    correlationid: str


def delivery_id(fanout: Fanout, subscriber: str) -> str:
    """The id of the delivery of this event to ``subscriber``: the same when the event is
    delivered again (the outbox), a new one for the message's next event (held, then
    released and succeeded; dead, then replayed)."""
    return derived_id(str(fanout.event.get("id") or fanout.message_id), subscriber)


class DynamicSubscribers(Protocol):
    """Subscribers found at dispatch time (webhook subscriptions kept in Redis)."""

    def matching(self, topic: str, *, fresh: bool = True) -> Sequence[Any]: ...

    def refresh(self) -> None: ...

    def snapshot(self, topic: str) -> tuple[bool, tuple[str, bytes | None]]: ...

    def deliveries(self, fanout: Fanout, source: str, *,
                   fresh: bool = True) -> list[dict[str, Any]]: ...


class Dispatcher:
    """Turns result events into delivery messages and emitted messages into submissions."""

    def __init__(self, submitter: Submitter, subscriptions: Sequence[Subscription],
                 dynamic: DynamicSubscribers | None = None, *, source: str) -> None:
        self.submitter = submitter
        self.subscriptions = list(subscriptions)
        self.dynamic = dynamic
        self.source = source
        self._static: dict[str, tuple[Subscription, ...]] = {}

    def wants(self, topic: str) -> bool:
        """Whether the event has subscribers (so its deliveries go through the outbox)."""
        return any(s.matches(topic) for s in self.subscriptions) or (
            self.dynamic is not None and bool(self.dynamic.matching(topic)))

    def wants_cached(self, topic: str) -> tuple[bool, tuple[str, bytes | None] | None]:
        """``wants`` without a Redis read: from the dynamic subscriptions last read, with the
        (key, version) they were read at, which the caller's write checks (None: nothing
        to check, no dynamic subscriptions). ``refresh_subscriptions`` reads them again."""
        static = bool(self.static_for(topic))
        if self.dynamic is None:
            return static, None
        dynamic, version = self.dynamic.snapshot(topic)
        return static or dynamic, version

    def refresh_subscriptions(self) -> None:
        if self.dynamic is not None:
            self.dynamic.refresh()

    def static_for(self, topic: str) -> tuple[Subscription, ...]:
        """The consumers in code of ``topic``, remembered per topic (they never change; a
        worker sees a few topics, each thousands of times)."""
        found = self._static.get(topic)
        if found is None:
            found = self._static[topic] = tuple(
                s for s in self.subscriptions if s.matches(topic))
        return found

    def inline_for(self, topic: str) -> list[Subscription]:
        """The consumers of ``topic`` that run in the finishing worker: those that may, and
        whose own deliveries nobody subscribes to (an inline delivery publishes no event)."""
        return [s for s in self.static_for(topic)
                if s.runs_inline and not self._watched(s.type_name)]

    def _watched(self, type_name: str) -> bool:
        topics = [f"{type_name}.{outcome}" for outcome in ("succeeded", "dead")]
        if any(self.static_for(t) for t in topics):
            return True
        return self.dynamic is not None and any(self.dynamic.snapshot(t)[0] for t in topics)

    def has_queued(self, topic: str, ran_inline: Mapping[str, Any]) -> bool:
        """Whether the event has deliveries to send as messages: consumers that did not run
        inline (by name in ``ran_inline``), or webhook subscriptions (as last read)."""
        if any(s.name not in ran_inline for s in self.static_for(topic)):
            return True
        return self.dynamic is not None and self.dynamic.snapshot(topic)[0]

    def deliveries(self, fanout: Fanout, *, fresh: bool = True,
                   ran_inline: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The delivery messages of the event (one per consumer and webhook subscription),
        but for the consumers that ran inline in the finishing worker (by name)."""
        skip = ran_inline or {}
        envelopes = [self.delivery(fanout, s) for s in self.subscriptions
                     if s.matches(fanout.topic) and s.name not in skip]
        if self.dynamic is not None:
            envelopes += self.dynamic.deliveries(fanout, self.source, fresh=fresh)
        return envelopes

    def delivery(self, fanout: Fanout, subscription: Subscription) -> dict[str, Any]:
        """The delivery of the event to ``subscription``, as an envelope."""
        return self._envelope(fanout, subscription.type_name, subscription.name,
                              {"topic": fanout.topic, "event": dict(fanout.event)})

    def _envelope(self, fanout: Fanout, type_name: str, key: str,
                  data: dict[str, Any]) -> dict[str, Any]:
        envelope = {"id": delivery_id(fanout, key), "type": type_name,
                    "source": self.source, "subject": fanout.message_id, "data": data,
                    "correlationid": fanout.correlationid, "causationid": fanout.message_id}
        # The delivery continues the event's trace, also when the outbox sends it later.
        envelope.update((k, v) for k, v in fanout.event.items() if k in TRACE_ATTRIBUTES)
        return envelope

    def dispatch(self, fanout: Fanout, *, fresh: bool = True,
                 ran_inline: Mapping[str, Any] | None = None) -> int:
        """Enqueue every delivery of the event but those that ran inline; raises
        ``TransientError`` if some could not be enqueued (the outbox tries again). Returns
        how many were enqueued. With ``fresh=False``, webhook subscriptions come from the
        list last read (the caller checked its version when it recorded the event)."""
        envelopes = self.deliveries(fanout, fresh=fresh, ran_inline=ran_inline)
        if envelopes:
            self.submit_once([Envelope.model_validate(e) for e in envelopes], fanout.owner)
        return len(envelopes)

    def submit_once(self, envelopes: Sequence[Envelope], owner: str) -> list[str]:
        """Submit messages whose ids are derived (so a repeat is a conflict, not a copy);
        a record left ``accepted`` by a process that died before publishing is sent now."""
        results = self.submitter.submit(envelopes, owner=owner, channel=EVENT_CHANNEL)
        ids = []
        for envelope, result in zip(envelopes, results, strict=True):
            if isinstance(result, Conflict):
                self._resend_if_stranded(envelope)
            elif isinstance(result, Problem):
                raise TransientError(f"{envelope.type} {envelope.id} not enqueued: "
                                     f"{result.detail}")
            ids.append(envelope.id if not isinstance(result, Accepted) else result.id)
        return ids

    def _resend_if_stranded(self, envelope: Envelope) -> None:
        """The id is taken: by this very message (sent before; re-send it if a process died
        before publishing it), or by another one, which must not pass for this delivery."""
        message_id = envelope.id
        record = self.submitter.store.get(message_id)
        if record is None:
            return
        stored = record.get("envelope") or {}
        if record.get("type") != envelope.type or \
                stored.get("causationid") != envelope.causationid:
            raise PermanentError(f"message id {message_id} is taken by another message; "
                                 f"the {envelope.type} message caused by "
                                 f"{envelope.causationid} cannot be sent")
        if record.get("status") != Status.ACCEPTED:
            return
        outcome = self.submitter.publisher.publish(
            [Outgoing(message_id, record["envelope"], record["queue"])])
        if outcome.error is not None:
            raise TransientError(f"{message_id} not enqueued: {outcome.error}")
        self.submitter.store.mark_queued_many([message_id])

    def emitter(self, cause: Envelope, owner: str) -> Emit:
        """``emit`` for a handler or consumer running ``cause``: messages it causes get the
        same owner and correlation id, and ids derived from ``cause`` (idempotent)."""

        def emit(type: str, data: Mapping[str, Any], **attributes: Any) -> str:
            key = str(attributes.pop("key", type))
            raw = {"id": derived_id(cause.id, key), "type": type, "source": self.source,
                   "data": dict(data), "correlationid": cause.correlationid or cause.id,
                   "causationid": cause.id, **attributes}
            try:
                envelope = self.submitter.parse(raw)
            except (InvalidMessage, Forbidden) as problem:
                raise PermanentError(f"emitted {type!r} message is invalid: "
                                     f"{problem.to_dict()}") from None
            return self.submit_once([envelope], owner)[0]

        return emit


class OutboxRelay:
    """Delivers the events whose deliveries were not all enqueued when their message finished
    (the worker died, the broker failed); every worker runs one, leases keep them apart."""

    def __init__(self, dispatcher: Dispatcher, *, lease_seconds: float = 30,
                 batch: int = 100) -> None:
        self.dispatcher = dispatcher
        self.store = dispatcher.submitter.store
        self.lease_seconds = lease_seconds
        self.batch = batch

    def run_once(self) -> int:
        lease, ids = self.store.take_outbox(self.batch, self.lease_seconds)
        done = 0
        for message_id in ids:
            record = self.store.get(message_id)
            event = record.get("event") if record else None
            if not record or not isinstance(event, dict):
                self.store.clear_outbox(message_id)  # expired or deleted meanwhile
                continue
            try:
                self.dispatcher.dispatch(Fanout(
                    message_id, record.get("owner", "direct"), str(event.get("type")), event,
                    str(event.get("correlationid") or message_id)))
            except (PermanentError, ValidationError) as exc:
                # Trying again cannot help: say so once, and stop.
                log.error("deliveries of %s abandoned: %s", message_id, exc)
            except Exception as exc:  # noqa: BLE001 - due again when the lease ends
                log.warning("deliveries of %s still delayed: %s", message_id, exc)
                continue
            self.store.clear_outbox(message_id)
            done += 1
        return done
