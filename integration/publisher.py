"""Enqueue messages as ``integration.process`` tasks, in batches, with a bounded publish.

On a Redis broker a chunk of messages is one ``MULTI``/``LPUSH``.../``EXEC`` round trip: all
of a chunk is in the broker or none of it is, so the gateway reports exactly what was
enqueued. The messages are Celery protocol-2 task messages in kombu's Redis wire format
(built with Celery's own ``as_task_v2``), consumed by an unmodified worker. Other transports
(RabbitMQ) publish through one kombu producer per batch, with publisher confirms.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from celery import Celery
from kombu.serialization import dumps as kombu_dumps
from redis.backoff import NoBackoff
from redis.retry import Retry

from integration.routing import PROCESS_TASK

_REDIS_SCHEMES = ("redis", "rediss")
_AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


#: The Celery message header that carries the correlation id, named like the envelope's
#: CloudEvents extension (``correlation_id`` is already an AMQP property: the task id).
CORRELATION_HEADER = "correlationid"


def correlation_of(envelope: Mapping[str, Any]) -> str:
    """The chain a message belongs to: its ``correlationid``, or its own id when it starts one."""
    return str(envelope.get("correlationid") or envelope.get("id") or "")


def args_summary(envelope: Mapping[str, Any]) -> str:
    """What Flower and worker logs show for a task's arguments: ids, never the data (which
    may carry secrets)."""
    fields = ("id", "type", "source", "correlationid")
    return repr({k: envelope[k] for k in fields if k in envelope})


class BrokerRefused(Exception):
    """RabbitMQ nacked a message of the chunk: the broker is up but will not take it."""


@dataclass(frozen=True)
class Outgoing:
    """One message to enqueue: its id (also the Celery task id), envelope and queue."""

    id: str
    envelope: Mapping[str, Any]
    queue: str


@dataclass(frozen=True)
class PublishOutcome:
    """Items ``[0, published)`` are in the broker; the rest are not, for ``error``'s reason."""

    published: int
    error: BaseException | None = None


class Publisher:
    """Publishes envelopes to their queues; never hangs longer than the configured timeout."""

    def __init__(self, celery_app: Celery, broker_url: str, *, timeout: float,
                 chunk_size: int, origin: str) -> None:
        self.app = celery_app
        self.chunk_size = chunk_size
        self._origin = origin
        self._timeout = timeout
        self._declared: set[str] = set()
        self._redis: redis.Redis | None = None
        if urlsplit(broker_url).scheme in _REDIS_SCHEMES:
            self._redis = redis.Redis.from_url(
                broker_url, socket_timeout=timeout, socket_connect_timeout=timeout,
                health_check_interval=30, retry=Retry(NoBackoff(), 0),
            )

    def publish(self, items: Sequence[Outgoing]) -> PublishOutcome:
        """Publish in order, chunk by chunk; stop at the first chunk that fails."""
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

    def shares_database(self, client: redis.Redis) -> bool:
        """Whether the broker is ``client``'s Redis database, so that a store script may push
        broker messages in the same transaction as status records."""
        if self._redis is None:
            return False
        mine = self._redis.connection_pool.connection_kwargs
        theirs = client.connection_pool.connection_kwargs
        return all(mine.get(k) == theirs.get(k) for k in ("host", "port", "path", "db"))

    def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        """Messages waiting in each queue (one round trip on Redis)."""
        if self._redis is not None:
            pipe = self._redis.pipeline(transaction=False)
            for queue in queues:
                pipe.llen(queue)
            return dict(zip(queues, (int(n) for n in pipe.execute()), strict=True))
        depths = {}
        with self.app.connection_for_write() as connection:
            channel = connection.default_channel
            for queue in queues:
                try:
                    depths[queue] = channel.queue_declare(queue, passive=True).message_count
                except Exception:  # noqa: BLE001 - not declared yet: nothing waits in it
                    channel = connection.channel()
                    depths[queue] = 0
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

    def _task_message(self, item: Outgoing) -> tuple[dict[str, Any], dict[str, Any], str]:
        """Headers, properties and JSON body of the Celery protocol-2 message ``send_task``
        would send (built by Celery's own ``as_task_v2``)."""
        headers, properties, body, _ = self.app.amqp.as_task_v2(
            item.id, PROCESS_TASK, args=(dict(item.envelope),), kwargs={},
            origin=self._origin, ignore_result=True, argsrepr=args_summary(item.envelope),
        )
        headers[CORRELATION_HEADER] = correlation_of(item.envelope)
        _, _, data = kombu_dumps(body, serializer="json")
        return headers, properties, data if isinstance(data, str) else data.decode()

    def redis_message(self, item: Outgoing) -> str:
        """The message kombu's Redis transport would push for ``send_task``."""
        headers, properties, body, _ = self.app.amqp.as_task_v2(
            item.id, PROCESS_TASK, args=(dict(item.envelope),), kwargs={},
            origin=self._origin, ignore_result=True, argsrepr=args_summary(item.envelope),
        )
        headers[CORRELATION_HEADER] = correlation_of(item.envelope)
        content_type, content_encoding, data = kombu_dumps(body, serializer="json")
        raw = data if isinstance(data, bytes) else data.encode(content_encoding)
        message = {
            "body": base64.b64encode(raw).decode("ascii"),
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": headers,
            "properties": {
                **properties,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": item.queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
        return json.dumps(message, separators=(",", ":"))

    # -- other transports -----------------------------------------------------------------
    def _publish_producer(self, chunk: Sequence[Outgoing]) -> None:
        if self.app.conf.broker_url.split(":", 1)[0] not in _AMQP_SCHEMES:
            self._publish_each(chunk)
            return
        with self.app.pool.acquire(block=True) as connection:
            try:
                connection.ensure_connection(max_retries=1)
                self._publish_confirmed(connection, chunk)
                return
            except BrokerRefused:
                raise
            except (*connection.connection_errors, OSError):
                # A pooled connection the broker closed while idle (heartbeats are not
                # sent between publishes): drop it and try once on a new one, as send_task's
                # retry policy did. A message published before the break may then be in the
                # queue twice; the worker's claim runs its effect once.
                connection.collect()
        with self.app.connection_for_write() as fresh:
            fresh.ensure_connection(max_retries=1)
            self._publish_confirmed(fresh, chunk)

    def _publish_confirmed(self, connection: Any, chunk: Sequence[Outgoing]) -> None:
        """RabbitMQ: publish the whole chunk on a confirm-mode channel, then wait for all its
        confirms at once (a round trip per chunk, not per message). The chunk counts as
        published only when every message was confirmed; a nack, an unroutable message, a
        broker silent for the publish timeout or a broken connection fails it whole."""
        from amqp import spec

        channel = connection.channel()
        try:
            channel.confirm_select()
            for queue in {item.queue for item in chunk} - self._declared:
                self._declare(channel, queue)
                self._declared.add(queue)
            confirmed: set[int] = set()
            refused: list[int] = []

            def on_confirm(method: Any, delivery_tag: int, multiple: bool, *_: Any) -> None:
                tags = range(1, delivery_tag + 1) if multiple else (delivery_tag,)
                (refused.extend if method == spec.Basic.Nack else confirmed.update)(tags)

            for item in chunk:
                headers, properties, body = self._task_message(item)
                # The plain publish: with confirm_publish on, basic_publish would wait for
                # each message's confirm in turn.
                channel._basic_publish(
                    channel.prepare_message(body, priority=0, content_type="application/json",
                                            content_encoding="utf-8", headers=headers,
                                            properties={**properties, "delivery_mode": 2}),
                    exchange=item.queue, routing_key=item.queue, mandatory=True)
            while len(confirmed) < len(chunk) and not refused:
                # Bounded like a socket read: a broker silent for the publish timeout fails
                # the chunk; one that keeps confirming (a slow disk) is waited for.
                channel.wait([spec.Basic.Ack, spec.Basic.Nack], callback=on_confirm,
                             timeout=self._timeout)
            if refused or not confirmed.issuperset(range(1, len(chunk) + 1)):
                raise BrokerRefused(f"the broker refused {len(refused)} message(s)")
        finally:
            with contextlib.suppress(Exception):
                channel.close()

    def _declare(self, channel: Any, queue: str) -> None:
        """The queue as Celery declares it (durable, a direct exchange of its name)."""
        from kombu import Exchange, Queue

        Queue(queue, Exchange(queue, type="direct"), routing_key=queue)(channel).declare()

    def _publish_each(self, chunk: Sequence[Outgoing]) -> None:
        with self.app.producer_or_acquire() as producer:
            for item in chunk:
                self.app.send_task(
                    PROCESS_TASK, args=(dict(item.envelope),), task_id=item.id,
                    queue=item.queue, producer=producer, ignore_result=True, retry=True,
                    argsrepr=args_summary(item.envelope),
                    headers={CORRELATION_HEADER: correlation_of(item.envelope)},
                )
