"""Enqueue messages as ``integration.process`` tasks, in batches, with a bounded publish.

On a Redis broker a chunk of messages is one ``MULTI``/``LPUSH``.../``EXEC`` round trip: all
of a chunk is in the broker or none of it is, so the gateway reports exactly what was
enqueued. The messages are Celery protocol-2 task messages in kombu's Redis wire format
(from a template Celery's own ``as_task_v2`` builds), consumed by an unmodified worker. On
RabbitMQ a chunk is published on a confirm-mode channel and its confirms are awaited together
(``integration.confirms``): each message is published exactly when its own confirm came.
Other transports publish through one kombu producer per batch.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis
from celery import Celery
from kombu.serialization import dumps as kombu_dumps
from redis.backoff import NoBackoff
from redis.retry import Retry

from integration.broker.amqp_frames import TaskFrames
from integration.broker.confirms import ConfirmedPublisher, Fate
from integration.messages.envelope import new_id
from integration.messages.routing import PROCESS_TASK
from integration.messages.tracecontext import TRACE_ATTRIBUTES, TRACEPARENT, TRACESTATE

_REDIS_SCHEMES = ("redis", "rediss")
_AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


#: The Celery message header that carries the correlation id, named like the envelope's
#: CloudEvents extension (``correlation_id`` is already an AMQP property: the task id).
CORRELATION_HEADER = "correlationid"


def correlation_of(envelope: Mapping[str, Any]) -> str:
    """The chain a message belongs to: its ``correlationid``, or its own id when it starts one."""
    return str(envelope.get("correlationid") or envelope.get("id") or "")


def trace_headers(envelope: Mapping[str, Any]) -> dict[str, str]:
    """The message's W3C Trace Context as Celery message headers (for tools that read them;
    the worker reads the envelope's)."""
    return {name: str(envelope[name]) for name in TRACE_ATTRIBUTES if envelope.get(name)}


def _delivery_tag() -> str:
    """A fresh delivery tag as kombu writes one (``str(uuid4())``), without building a UUID
    object."""
    text = new_id()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _json(text: str) -> str:
    return orjson.dumps(text).decode()


def _json_or_null(value: Any) -> str:
    return _json(str(value)) if value else "null"


def args_summary(envelope: Mapping[str, Any]) -> str:
    """What Flower and worker logs show for a task's arguments: ids, never the data (which
    may carry secrets)."""
    fields = ("id", "type", "source", "correlationid")
    return repr({k: envelope[k] for k in fields if k in envelope})


def shadow_of(envelope: Mapping[str, Any]) -> str:
    """The name Flower and ``celery events`` show for the task: ``integration.process[type]``
    (Celery's shadow name; the task that runs is still ``integration.process``)."""
    return f"{PROCESS_TASK}[{str(envelope.get('type') or '')[:100]}]"


@dataclass(frozen=True)
class Outgoing:
    """One message to enqueue: its id (also the Celery task id), envelope and queue."""

    id: str
    envelope: Mapping[str, Any]
    queue: str
    #: The envelope as compact JSON, when the caller has it already (saves encoding it again).
    envelope_json: str | None = None


#: What differs between two ``integration.process`` messages in kombu's Redis wire format.
_REDIS_SLOTS = ("body", "id", "argsrepr", "shadow", "correlationid", "traceparent",
                "tracestate", "routing_key", "delivery_tag")
#: Slots only a message with a trace context has (its Celery headers carry it too).
_TRACE_SLOTS = TRACE_ATTRIBUTES
_SLOT = re.compile(r'"\\u0000([a-z_]+)\\u0000"')


@dataclass(frozen=True)
class _MessageTemplate:
    """What every ``integration.process`` message of this publisher shares, as Celery's own
    ``as_task_v2`` and kombu's JSON serializer write it for ``send_task``."""

    #: The body after its args list: ``kwargs, embed]`` (the args are each message's own).
    rest_of_body: str
    #: The message's JSON cut where each message's own values go (``_REDIS_SLOTS``; the id
    #: goes in three places): ``texts[0] + slots[0]'s value + texts[1] + ... + texts[-1]``,
    #: each value written as JSON.
    redis_texts: tuple[str, ...]
    redis_slots: tuple[str, ...]

    @classmethod
    def of(cls, app: Celery, origin: str, traced: bool) -> _MessageTemplate:
        """The template of messages with (``traced``) or without a trace context."""
        marker = {"template": True}
        headers, properties, body, _ = app.amqp.as_task_v2(
            "template", PROCESS_TASK, args=(marker,), kwargs={}, origin=origin,
            ignore_result=True, argsrepr="")
        content_type, encoding, data = kombu_dumps(body, serializer="json")
        if content_type != "application/json" or encoding != "utf-8":
            raise RuntimeError(f"unexpected task serialization {content_type}/{encoding}")
        args, kwargs, embed = json.loads(data)
        if args != [marker]:
            raise RuntimeError("unexpected task body layout")
        rest = json.dumps([kwargs, embed], separators=(",", ":"))[1:]
        names = _REDIS_SLOTS if traced else tuple(n for n in _REDIS_SLOTS if n not in _TRACE_SLOTS)
        slot = {name: f"\0{name}\0" for name in names}
        trace = {name: slot[name] for name in _TRACE_SLOTS if traced}
        message = {
            "body": slot["body"],
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {**headers, "id": slot["id"], "root_id": slot["id"],
                        "argsrepr": slot["argsrepr"], "shadow": slot["shadow"],
                        CORRELATION_HEADER: slot["correlationid"], **trace},
            "properties": {**properties, "delivery_mode": 2, "priority": 0,
                           "body_encoding": "base64", "correlation_id": slot["id"],
                           "delivery_info": {"exchange": "",
                                             "routing_key": slot["routing_key"]},
                           "delivery_tag": slot["delivery_tag"]},
        }
        cut = _SLOT.split(orjson.dumps(message).decode())
        if set(cut[1::2]) != set(names):
            raise RuntimeError("unexpected task message layout")
        return cls(rest_of_body=rest, redis_texts=tuple(cut[0::2]),
                   redis_slots=tuple(cut[1::2]))


@dataclass(frozen=True)
class PublishOutcome:
    """Items ``[0, published)`` are in the broker, except those in ``refused`` (RabbitMQ
    refused them) and those in ``doubtful`` (written, their confirms lost: the broker may
    hold them); the rest are not, for ``error``'s reason."""

    published: int
    error: BaseException | None = None
    refused: frozenset[int] = frozenset()
    doubtful: frozenset[int] = frozenset()

    def sent(self, index: int) -> bool:
        return index < self.published and index not in self.refused \
            and index not in self.doubtful

    def in_doubt(self, index: int) -> bool:
        return index in self.doubtful

    def unsent(self, items: Sequence[Outgoing]) -> list[Outgoing]:
        """What the broker surely does not hold."""
        return [item for index, item in enumerate(items)
                if not self.sent(index) and not self.in_doubt(index)]


class Publisher:
    """Publishes envelopes to their queues; never hangs longer than the configured timeout.

    ``client`` is the broker's Redis when ``broker_url`` does not name the server (the master
    behind sentinels, ``sentinel://``)."""

    def __init__(self, celery_app: Celery, broker_url: str, *, timeout: float,
                 chunk_size: int, origin: str, client: redis.Redis | None = None) -> None:
        self.app = celery_app
        self.chunk_size = chunk_size
        self._origin = origin
        self._message_templates: dict[bool, _MessageTemplate] = {}
        self._redis: redis.Redis | None = None
        self._confirmed: ConfirmedPublisher | None = None
        scheme = urlsplit(broker_url).scheme
        if scheme in _AMQP_SCHEMES:
            self._confirmed = ConfirmedPublisher(celery_app, TaskFrames(celery_app, origin),
                                                 timeout=timeout)
        if client is not None:  # the URL does not say the server (Sentinel)
            self._redis = client
        elif scheme in _REDIS_SCHEMES:
            self._redis = redis.Redis.from_url(
                broker_url, socket_timeout=timeout, socket_connect_timeout=timeout,
                health_check_interval=30, retry=Retry(NoBackoff(), 0),
            )

    def publish(self, items: Sequence[Outgoing]) -> PublishOutcome:
        """Publish in order, chunk by chunk; stop at the first chunk that fails."""
        if self._confirmed is not None:
            return self._publish_confirmed(items)
        published = 0
        for start in range(0, len(items), self.chunk_size):
            chunk = items[start:start + self.chunk_size]
            try:
                if self._redis is not None:
                    self._publish_redis(chunk)
                else:
                    self._publish_producer(chunk)
            except Exception as exc:  # noqa: BLE001 - any broker failure ends the batch here
                return PublishOutcome(published, exc)
            published += len(chunk)
        return PublishOutcome(published)

    @property
    def redis_client(self) -> redis.Redis | None:
        """The broker's Redis, when the broker is Redis (None for RabbitMQ and others)."""
        return self._redis

    def shares_database(self, client: redis.Redis) -> bool:
        """Whether the broker is ``client``'s Redis database, so that a store script may push
        broker messages in the same transaction as status records."""
        if self._redis is None:
            return False
        mine, theirs = self._redis.connection_pool, client.connection_pool
        # Behind sentinels the address is the master's of the moment: the service names it.
        return getattr(mine, "service_name", None) == getattr(theirs, "service_name", None) \
            and all(mine.connection_kwargs.get(k) == theirs.connection_kwargs.get(k)
                    for k in ("host", "port", "path", "db"))

    def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        """Messages waiting in each queue (one round trip on Redis)."""
        if self._redis is not None:
            pipe = self._redis.pipeline(transaction=False)
            for queue in queues:
                pipe.llen(queue)
            return dict(zip(queues, (int(n) for n in pipe.execute()), strict=True))
        depths = {}
        # A pooled connection: it stays on a node that answered, where a new one would start
        # at the first node of a multi-node URL, perhaps the one that is cut off.
        with self.app.pool.acquire(block=True) as connection:
            try:
                connection.ensure_connection(max_retries=1)
                channel = connection.channel()
                for queue in queues:
                    try:
                        depths[queue] = channel.queue_declare(queue, passive=True).message_count
                    except connection.channel_errors:  # not declared yet: nothing waits in it
                        # The broker closed that channel; close ours too, or each such
                        # lookup would leave one open on the pooled connection.
                        with contextlib.suppress(Exception):
                            channel.close()
                        channel = connection.channel()
                        depths[queue] = 0
                channel.close()
            except Exception:
                connection.collect()  # never back to the pool half broken
                raise
        return depths

    def ping(self) -> bool:
        if self._redis is not None:
            return bool(self._redis.ping())
        with self.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
        return True

    # -- Redis: one transaction per chunk -------------------------------------------------
    def _publish_redis(self, chunk: Sequence[Outgoing]) -> None:
        assert self._redis is not None
        pipe = self._redis.pipeline(transaction=True)
        for item in chunk:
            pipe.lpush(item.queue, self.redis_message(item))
        pipe.execute()

    def redis_message(self, item: Outgoing) -> str:
        """The message kombu's Redis transport would push for ``send_task``.

        Celery's ``as_task_v2`` builds the headers, properties and body once (``_template``);
        each message fills in what is its own (ids, ``argsrepr``, correlation, the envelope),
        far cheaper than building it from scratch; the message's JSON is the template's
        text with those values written in. The envelope's JSON is reused when the caller
        already has it (``Outgoing.envelope_json``).
        """
        traceparent = item.envelope.get(TRACEPARENT)
        template = self._template(bool(traceparent))
        envelope = item.envelope_json or orjson.dumps(dict(item.envelope)).decode()
        body = f"[[{envelope}],{template.rest_of_body}".encode()
        values = {
            "body": f'"{base64.b64encode(body).decode("ascii")}"',  # base64 needs no escaping
            "id": _json(item.id),
            "argsrepr": _json(args_summary(item.envelope)),
            "shadow": _json(shadow_of(item.envelope)),
            "correlationid": _json(correlation_of(item.envelope)),
            "routing_key": _json(item.queue),
            "delivery_tag": f'"{_delivery_tag()}"',  # hex digits and dashes
        }
        if traceparent:  # the slots of the template of traced messages (tracestate may be null)
            values[TRACEPARENT] = _json(str(traceparent))
            values[TRACESTATE] = _json_or_null(item.envelope.get(TRACESTATE))
        texts = template.redis_texts
        pieces = [texts[0]]
        for slot, text in zip(template.redis_slots, texts[1:], strict=True):
            pieces += (values[slot], text)
        return "".join(pieces)

    def _template(self, traced: bool) -> _MessageTemplate:
        template = self._message_templates.get(traced)
        if template is None:
            template = self._message_templates[traced] = _MessageTemplate.of(
                self.app, self._origin, traced)
        return template

    # -- RabbitMQ: a chunk's confirms awaited together ---------------------------------------
    def _publish_confirmed(self, items: Sequence[Outgoing]) -> PublishOutcome:
        assert self._confirmed is not None
        messages = [
            TaskFrames.message(item.queue, item.id, (dict(item.envelope),), {
                "argsrepr": args_summary(item.envelope), "shadow": shadow_of(item.envelope),
                CORRELATION_HEADER: correlation_of(item.envelope), **trace_headers(item.envelope),
            })
            for item in items
        ]
        fates, error = self._confirmed.publish(messages, self.chunk_size)
        published = max((i + 1 for i, fate in enumerate(fates) if fate is not Fate.UNSENT),
                        default=0)
        return PublishOutcome(
            published, error,
            refused=frozenset(i for i, fate in enumerate(fates) if fate is Fate.REFUSED),
            doubtful=frozenset(i for i, fate in enumerate(fates) if fate is Fate.IN_DOUBT))

    # -- other transports: one producer, confirms per message ------------------------------
    def _publish_producer(self, chunk: Sequence[Outgoing]) -> None:
        with self.app.producer_or_acquire() as producer:
            for item in chunk:
                self.app.send_task(
                    PROCESS_TASK, args=(dict(item.envelope),), task_id=item.id,
                    queue=item.queue, producer=producer, ignore_result=True, retry=True,
                    argsrepr=args_summary(item.envelope), shadow=shadow_of(item.envelope),
                    headers={CORRELATION_HEADER: correlation_of(item.envelope),
                             **trace_headers(item.envelope)},
                )
