"""Consumers: functions subscribed to event topics, each delivered as its own message.

A subscription is declared in code with the ``consumer`` decorator (or loaded from another
installed package through the ``integration.consumers`` entry point, or from
``INTEGRATION_CONSUMER_MODULES``). Each subscription becomes a message type
``consumer.<name>`` on its own queue, so a delivery has its own status record, retries, dead
letters, metrics and trace, and one slow or failing consumer never holds up another::

    from integration.events.consumers import consumer

    @consumer("alert.succeeded", "*.dead", name="pager")
    def page_oncall(event, context):
        ...                                   # event: the CloudEvent of the result
        context.emit("event", {"paged": True})  # a message caused by this delivery
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from importlib.metadata import entry_points
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from integration.messages.envelope import Envelope
from integration.messages.registry import MessageType, import_named
from integration.messages.retry import RetryPolicy

log = logging.getLogger(__name__)

#: Entry-point group through which another installed package adds consumers.
ENTRY_POINT_GROUP = "integration.consumers"
#: Message types of consumer deliveries are named ``consumer.<name>`` (and so are queues).
TYPE_PREFIX = "consumer."
#: Channel recorded for messages created by the service itself (deliveries, loop stages).
EVENT_CHANNEL = "event"
#: Topics of delivery messages themselves (a consumer's or a webhook's delivery finishing).
DELIVERY_TOPIC_PREFIXES = (TYPE_PREFIX, "webhook.")


def is_delivery_topic(topic: str) -> bool:
    return topic.startswith(DELIVERY_TOPIC_PREFIXES)


def topic_matches(patterns: Iterable[str], topic: str) -> bool:
    """Whether any pattern selects ``topic``. The events of deliveries are selected only by a
    pattern that names them (``webhook.dead``, ``consumer.pager.*``), never by a leading
    wildcard: otherwise a ``*`` subscriber's own deliveries would feed it forever."""
    if is_delivery_topic(topic):
        patterns = [p for p in patterns if p.startswith(DELIVERY_TOPIC_PREFIXES)]
    return any(fnmatchcase(topic, pattern) for pattern in patterns)


class Emit(Protocol):
    def __call__(self, type: str, data: Mapping[str, Any], **attributes: Any) -> str: ...


@dataclass(frozen=True)
class ConsumerContext:
    """What a consumer gets besides the event: the delivery's envelope and ``emit``, which
    submits a message caused by this delivery (same owner and correlation id; emitting the
    same type twice from one delivery, as a retry does, enqueues it once)."""

    envelope: Envelope
    topic: str
    emit: Emit


ConsumerHandler = Callable[[dict[str, Any], ConsumerContext], Mapping[str, Any] | None]


class Delivered(BaseModel):
    """The payload of a consumer delivery: the topic and the result event (a CloudEvent)."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1, max_length=300)
    event: dict[str, Any]


@dataclass(frozen=True)
class Subscription:
    """A named consumer of the topics matching ``patterns`` (``alert.*``, ``*.dead``)."""

    name: str
    patterns: tuple[str, ...]
    handler: ConsumerHandler
    description: str = ""
    retry: RetryPolicy | None = None
    #: The downstream target a delivery acts on (a circuit breaker per target), if any.
    target: Callable[[Delivered], str] | None = field(default=None)
    #: May run in the worker that finished the message, right after it (a fraction of a
    #: message instead of a message of its own); it falls back to a delivery message of
    #: its own when it fails. Only without a target (breakers and rate limits need one).
    inline: bool = False

    @property
    def runs_inline(self) -> bool:
        return self.inline and self.target is None

    @property
    def type_name(self) -> str:
        return TYPE_PREFIX + self.name

    def matches(self, topic: str) -> bool:
        """Whether this consumer receives ``topic`` (never the events of its own deliveries)."""
        if topic.startswith(self.type_name + "."):
            return False
        return topic_matches(self.patterns, topic)

    def __call__(self, event: dict[str, Any], context: ConsumerContext) -> Any:
        return self.handler(event, context)


def consumer(*patterns: str, name: str | None = None, description: str = "",
             retry: RetryPolicy | None = None,
             inline: bool = False) -> Callable[[ConsumerHandler], Subscription]:
    """Declare a consumer of the topics matching ``patterns``; returns the ``Subscription``
    (expose it through an entry point or ``INTEGRATION_CONSUMER_MODULES`` to run it). With
    ``inline``, it runs in the worker that finished the message (see ``Subscription``)."""
    if not patterns:
        raise ValueError("a consumer needs at least one topic pattern")

    def declare(handler: ConsumerHandler) -> Subscription:
        return Subscription(name or handler.__name__.replace("_", "-"), tuple(patterns),
                            handler, description or (handler.__doc__ or "").strip()
                            .split("\n")[0], retry, inline=inline)

    return declare


_current_emit: ContextVar[Emit | None] = ContextVar("integration_emit", default=None)


@contextmanager
def emitting(emit: Emit) -> Iterator[None]:
    """Make ``emit`` available to the handler running inside this block (the worker sets it
    around every handler call)."""
    token = _current_emit.set(emit)
    try:
        yield
    finally:
        _current_emit.reset(token)


def current_emit() -> Emit:
    """``emit`` of the message being processed: submit a message it causes."""
    emit = _current_emit.get()
    if emit is None:
        raise RuntimeError("emit is available only while a worker processes a message")
    return emit


def delivery_type(subscription: Subscription) -> MessageType:
    """The message type that carries deliveries to ``subscription``."""

    def handle(payload: Delivered, envelope: Envelope) -> Mapping[str, Any] | None:
        context = ConsumerContext(envelope, payload.topic, current_emit())
        result = subscription(payload.event, context)
        return dict(result) if result else {"consumed": payload.topic}

    target = subscription.target
    return MessageType(subscription.type_name, Delivered, handle,
                       subscription.description or f"Deliveries to {subscription.name}.",
                       retry=subscription.retry, target=target, internal=True)


def _loaded(value: Any) -> list[Subscription]:
    provided = value() if callable(value) and not isinstance(value, Subscription) else value
    return [provided] if isinstance(provided, Subscription) else list(provided)


def load_subscriptions(module_paths: str, builtin: Iterable[Subscription] = ()
                       ) -> list[Subscription]:
    """Built-in subscriptions, then entry points, then ``module:attribute`` paths; a name
    declared twice is an error, not a silent override."""
    found: dict[str, Subscription] = {}

    def add(subscriptions: Iterable[Subscription], origin: str) -> None:
        for subscription in subscriptions:
            if subscription.name in found:
                raise ValueError(f"consumer {subscription.name!r} ({origin}) is already "
                                 "declared")
            found[subscription.name] = subscription

    add(builtin, "built-in")
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        add(_loaded(entry_point.load()), f"entry point {entry_point.name}")
    for path in filter(None, (p.strip() for p in module_paths.split(","))):
        add(_loaded(import_named(path, "INTEGRATION_CONSUMER_MODULES", "CONSUMERS")), path)
    return list(found.values())
