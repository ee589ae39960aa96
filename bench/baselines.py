"""The baselines our figures are divided by: what raw Celery, kombu and Flask do alone.

The two WSGI apps run under the same gunicorn settings as the gateway (worker class, worker
and connection counts): ``hello`` answers a POST and nothing else; ``guarded`` is ``hello``
behind a verified bearer token and a Redis-counted rate limit; ``naive`` is the gateway
people write first (parse, validate with pydantic, ``send_task``), without auth, limits,
status or idempotency.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from celery import Celery
from flask import Flask, request
from flask_jwt_extended import JWTManager, get_jwt_identity, verify_jwt_in_request
from flask_limiter import Limiter
from kombu import Connection, Exchange, Producer, Queue
from pydantic import ValidationError

from integration.app import get_settings
from integration.loop.types import MetricPayload
from integration.messages.envelope import Envelope

#: Task name of the no-op task the raw worker runs and the raw producers send.
NOOP_TASK = "bench.noop"
NOOP_QUEUE = "bench.noop"


def raw_celery(broker_url: str) -> Celery:
    """A stock Celery app on the broker: JSON, no routing, no result backend."""
    app = Celery("bench", broker=broker_url)
    app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                    broker_transport_options={"confirm_publish": True})
    if broker_url.startswith("redis://"):
        # kombu's own transport, even in a process where celeryconfig made redis:// ours.
        app.conf.broker_transport = "kombu.transport.redis:Transport"
    return app


def send_task_rate(broker_url: str, envelope: dict[str, Any], duration: float,
                   queue: str = NOOP_QUEUE) -> float:
    """Messages per second one process sends with ``send_task``, one call per message."""
    app = raw_celery(broker_url)
    with app.producer_or_acquire() as producer:
        app.send_task(NOOP_TASK, args=(envelope,), queue=queue, producer=producer)  # connect
        sent, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < duration:
            app.send_task(NOOP_TASK, args=(envelope,), queue=queue, producer=producer)
            sent += 1
    return sent / elapsed


def kombu_batch_rate(broker_url: str, envelope: dict[str, Any], duration: float,
                     batch: int = 100, queue: str = NOOP_QUEUE) -> float:
    """Messages per second of one kombu producer publishing ``batch`` messages per call, with
    publisher confirms on RabbitMQ (each publish waits for its confirm, as kombu does)."""
    body = json.dumps([[envelope], {}, {}])
    exchange = Exchange(queue, type="direct")
    target = Queue(queue, exchange, routing_key=queue)
    with Connection(broker_url, transport_options={"confirm_publish": True}) as connection:
        producer = Producer(connection.channel(), exchange=exchange, routing_key=queue)
        target.declare(channel=producer.channel)

        def publish_batch() -> None:
            for _ in range(batch):
                producer.publish(body, content_type="application/json",
                                 content_encoding="utf-8", delivery_mode=2,
                                 headers={"task": NOOP_TASK, "id": uuid.uuid4().hex})

        publish_batch()
        sent, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < duration:
            publish_batch()
            sent += batch
        producer.channel.queue_purge(queue)
    return sent / elapsed


def _hello() -> tuple[str, int]:
    """Read the body, answer a constant: the least a POST can do."""
    request.get_data()
    return '{"hello": "world"}', 202


def hello_app() -> Flask:
    app = Flask("bench.hello")
    app.post("/api/v1/messages")(_hello)
    # Where the tracing gateway exports its spans (OTLP/HTTP): taken and dropped.
    app.post("/v1/traces", endpoint="traces")(_hello)
    return app


def guarded_app() -> Flask:
    """The hello-world POST behind the two checks every request of ours passes before any
    message work: a bearer token verified by flask-jwt-extended and a per-subject rate limit
    counted in Redis by Flask-Limiter (the same strategy and storage as ours), both as the
    libraries come. What a single submit costs at least with them."""
    settings = get_settings()
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
    app = Flask("bench.guarded")
    app.config.update(JWT_SECRET_KEY=secret, JWT_TOKEN_LOCATION=["headers"])
    JWTManager(app)

    def subject() -> str:
        verify_jwt_in_request()
        return f"sub:{get_jwt_identity()}"

    limiter = Limiter(key_func=subject, app=app, storage_uri=settings.redis_url,
                      strategy=settings.rate_limit_strategy, key_prefix="bench-guarded")

    app.post("/api/v1/messages")(limiter.limit("1000000/second")(_hello))
    return app


def naive_app() -> Flask:
    """Validate the envelope and its metric payload with pydantic, then ``send_task``."""
    app = Flask("bench.naive")
    celery = raw_celery(get_settings().broker)

    @app.post("/api/v1/messages")
    def submit() -> tuple[dict[str, Any], int]:
        try:
            envelope = Envelope.model_validate(request.get_json())
            MetricPayload.model_validate(envelope.data)
        except ValidationError as exc:
            return {"errors": exc.errors(include_url=False, include_context=False)}, 422
        celery.send_task(NOOP_TASK, args=(envelope.to_wire(),), queue=NOOP_QUEUE,
                         task_id=envelope.id)
        return {"id": envelope.id}, 202

    return app



