"""Outbound webhooks: subscriptions kept in Redis, each event delivered as a signed HTTP POST.

A delivery is a ``webhook`` message on its own queue, so it is retried with backoff, guarded by
a circuit breaker per receiving host, dead when exhausted, and visible in the trace of the
message whose event it carries. A subscription whose deliveries keep failing is disabled.

Deliveries are signed per Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``), and also with the deprecated ``X-Integration-Signature`` while
``INTEGRATION_WEBHOOK_LEGACY_SIGNATURE`` is on (``integration.events.signatures``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import redis
from pydantic import BaseModel, ConfigDict, Field, field_validator

from integration import tracing
from integration.events.consumers import topic_matches
from integration.events.dispatch import Fanout, delivery_id
from integration.events.signatures import (
    LEGACY_SIGNATURE_HEADER,
    new_secret,
    secret_problem,
    sign_legacy,
    standard_headers,
    verify_legacy,
)
from integration.messages import effects
from integration.messages.envelope import Envelope, new_id, utc_now
from integration.messages.registry import MessageType
from integration.messages.retry import DownstreamError, PermanentError, TransientError, classify
from integration.security.rights import CreatorRights
from integration.settings import ConfigurationError

log = logging.getLogger(__name__)

#: The queue and message type of webhook deliveries.
WEBHOOK_TYPE = "webhook"
#: The deprecated scheme's names, where earlier versions had them (receivers import them).
SIGNATURE_HEADER = LEGACY_SIGNATURE_HEADER
verify = verify_legacy


class WebhookRequest(BaseModel):
    """What a client sends to create a subscription."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=2048)
    topics: list[str] = Field(min_length=1, max_length=20)
    secret: str | None = Field(None, min_length=16, max_length=256)
    description: str = Field("", max_length=500)

    @field_validator("secret")
    @classmethod
    def _usable_secret(cls, secret: str | None) -> str | None:
        problem = secret_problem(secret) if secret is not None else None
        if problem:
            raise ValueError(problem)
        return secret


class Webhook(BaseModel):
    """A stored subscription (the secret is never shown again after creation)."""

    id: str
    url: str
    topics: list[str]
    secret: str
    description: str = ""
    owner: str
    #: The creator's roles when it made the subscription: every delivery checks that the
    #: policy in force still lets them receive the event (None: made before they were kept).
    roles: list[str] | None = None
    #: The creator's read scope: with ``own``, only events of the creator's own messages.
    scope: Literal["own", "any"] = "any"
    enabled: bool = True
    created_at: str
    failures: int = 0
    disabled_at: str | None = None
    disabled_reason: str | None = None
    #: The last delivery refused because its creator's rights no longer hold, and why.
    refused_at: str | None = None
    refused_reason: str | None = None

    @property
    def host(self) -> str:
        """The receiving endpoint, ``host[:port]``: the unit of its circuit breaker."""
        parts = urlsplit(self.url)
        host = (parts.hostname or "").lower()
        return f"{host}:{parts.port}" if parts.port else host

    def matches(self, topic: str) -> bool:
        """Enabled and selecting ``topic``; webhook deliveries' own events are never sent to
        webhooks (a failing receiver would be sent the news of its own failures forever)."""
        return self.enabled and not topic.startswith("webhook.") and \
            topic_matches(self.topics, topic)

    def public(self) -> dict[str, Any]:
        return self.model_dump(exclude={"secret"})


class Webhooks:
    """Subscriptions in Redis; dispatchers cache them until a change bumps the version."""

    def __init__(self, client: redis.Redis, prefix: str, *, disable_after: int) -> None:
        self.client = client
        self.prefix = prefix
        self.disable_after = disable_after
        self._cache: tuple[bytes | None, list[Webhook]] = (b"", [])
        self._lock = threading.Lock()

    @property
    def _all_key(self) -> str:
        return f"{self.prefix}:webhooks"

    @property
    def _version_key(self) -> str:
        return f"{self.prefix}:webhooks:version"

    def _key(self, webhook_id: str) -> str:
        return f"{self.prefix}:webhook:{webhook_id}"

    def create(self, request: WebhookRequest, owner: str,
               scope: Literal["own", "any"] = "any", roles: list[str] | None = None
               ) -> Webhook:
        webhook = Webhook(id=new_id(), url=request.url, topics=request.topics,
                          secret=request.secret or new_secret(),
                          description=request.description, owner=owner, roles=roles,
                          scope=scope, created_at=utc_now().isoformat())
        self._save(webhook, new=True)
        return webhook

    def _save(self, webhook: Webhook, new: bool = False) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self._key(webhook.id), webhook.model_dump_json())
        if new:
            pipe.sadd(self._all_key, webhook.id)
        pipe.incr(self._version_key)
        pipe.execute()

    def get(self, webhook_id: str) -> Webhook | None:
        raw = cast(bytes | None, self.client.get(self._key(webhook_id)))
        return Webhook.model_validate_json(raw) if raw else None

    def all(self) -> list[Webhook]:
        ids = sorted(m.decode() for m in cast(set[bytes], self.client.smembers(self._all_key)))
        if not ids:
            return []
        raws = cast(list[bytes | None], self.client.mget([self._key(i) for i in ids]))
        return [Webhook.model_validate_json(r) for r in raws if r]

    def delete(self, webhook_id: str) -> bool:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self._key(webhook_id))
        pipe.delete(self._failures_key(webhook_id))
        pipe.srem(self._all_key, webhook_id)
        pipe.incr(self._version_key)
        return bool(pipe.execute()[0])

    def enable(self, webhook_id: str) -> Webhook | None:
        """Turn a disabled subscription back on (after fixing the receiver)."""
        webhook = self.get(webhook_id)
        if webhook is None:
            return None
        webhook = webhook.model_copy(update={"enabled": True, "failures": 0,
                                             "disabled_at": None, "disabled_reason": None})
        self._save(webhook)
        self.client.delete(self._failures_key(webhook_id))  # a fresh start, not one failure away
        return webhook

    def refuse(self, webhook: Webhook, reason: str) -> None:
        """Record that a delivery was refused because the creator's rights no longer hold
        (once per reason, so a stream of refusals does not rewrite the subscription)."""
        if webhook.refused_reason == reason:
            return
        self._save(webhook.model_copy(update={"refused_at": utc_now().isoformat(),
                                              "refused_reason": reason}))
        log.warning("webhook delivery refused", extra={"subscription": webhook.id,
                                                       "reason": reason})

    def _failures_key(self, webhook_id: str) -> str:
        return f"{self._key(webhook_id)}:failures"

    def record(self, webhook_id: str, ok: bool, error: str = "") -> None:
        """Count consecutive failed attempts; disable the subscription at the limit."""
        counter = self._failures_key(webhook_id)
        if ok:
            self.client.delete(counter)
            return
        failures = int(cast(int, self.client.incr(counter)))
        self.client.expire(counter, 7 * 24 * 3600)
        if failures < self.disable_after:
            return
        webhook = self.get(webhook_id)
        if webhook is None or not webhook.enabled:
            return
        reason = f"{failures} delivery attempts in a row failed; last: {error}"[:500]
        self._save(webhook.model_copy(update={
            "enabled": False, "failures": failures, "disabled_at": utc_now().isoformat(),
            "disabled_reason": reason}))
        log.warning("webhook subscription disabled", extra={
            "subscription": webhook_id, "host": webhook.host, "reason": reason})

    def matching(self, topic: str, *, fresh: bool = True) -> list[Webhook]:
        """Enabled subscriptions of ``topic`` (one Redis read while nothing changed); with
        ``fresh=False``, from the list last read, without asking Redis (the caller checked
        its version, see ``snapshot``)."""
        if fresh:
            self.refresh()
        return [w for w in self._cache[1] if w.matches(topic)]

    def refresh(self) -> None:
        """Read the version, and the subscriptions again if it changed."""
        version = cast(bytes | None, self.client.get(self._version_key))
        with self._lock:
            cached_version, cached = self._cache
            if version != cached_version:
                self._cache = (version, self.all())

    def snapshot(self, topic: str) -> tuple[bool, tuple[str, bytes | None]]:
        """Whether the list last read has subscriptions of ``topic``, and the key and version
        that list was read at, for a write that must not happen if the list changed since.
        Before the first read, the list is empty and its version reads as no value: right
        while no subscription was ever made, and a check that fails otherwise."""
        version, cached = self._cache
        return any(w.matches(topic) for w in cached), (self._version_key, version)

    def deliveries(self, fanout: Fanout, source: str, *,
                   fresh: bool = True) -> list[dict[str, Any]]:
        """One ``webhook`` delivery envelope per matching subscription."""
        return [{"id": delivery_id(fanout, f"webhook:{w.id}"), "type": WEBHOOK_TYPE,
                 "source": source, "subject": fanout.message_id,
                 "correlationid": fanout.correlationid, "causationid": fanout.message_id,
                 "data": {"subscription": w.id, "host": w.host, "topic": fanout.topic,
                          "event": dict(fanout.event), "owner": fanout.owner}}
                for w in self.matching(fanout.topic, fresh=fresh)
                if w.scope == "any" or w.owner == fanout.owner]


def _without_url(error: Exception, message: str) -> Exception:
    """The same kind of error (so retries and the breaker treat it alike), with ``message``."""
    try:
        return type(error)(message)
    except Exception:  # noqa: BLE001 - a class with another signature: keep its retry class
        return PermanentError(message) if classify(error) == "permanent" \
            else TransientError(message)


class WebhookDelivery(BaseModel):
    """The payload of a ``webhook`` message."""

    model_config = ConfigDict(extra="forbid")

    subscription: str = Field(min_length=1, max_length=128)
    host: str = Field(min_length=1, max_length=255)
    topic: str = Field(min_length=1, max_length=300)
    event: dict[str, Any]
    #: Who the message of the event belongs to (the subscription's creator must still be
    #: allowed to read its events when the delivery runs).
    owner: str | None = Field(None, max_length=256)


#: Sends one POST: (url, body, headers) -> HTTP status; raises on a refused or failed request.
Post = Callable[[str, bytes, Mapping[str, str]], int]


def webhook_type(webhooks: Callable[[], Webhooks], post: Callable[[], Post],
                 rights: Callable[[], CreatorRights], *,
                 legacy_signature: Callable[[], bool] = lambda: True) -> MessageType:
    """The message type of webhook deliveries; ``webhooks``, ``post`` and ``rights`` are built
    lazily in the worker process that runs them; ``legacy_signature`` says whether the
    deprecated signature header is sent too."""

    def deliver(payload: WebhookDelivery, envelope: Envelope) -> dict[str, Any]:
        store = webhooks()
        webhook = store.get(payload.subscription)
        if webhook is None or not webhook.enabled:
            return {"skipped": "the subscription was deleted" if webhook is None
                    else "the subscription is disabled"}
        refusal = rights().to_deliver(webhook.owner, webhook.roles, webhook.created_at,
                                      payload.topic, payload.owner)
        if refusal is not None:
            store.refuse(webhook, refusal)
            return {"skipped": f"refused: {refusal}", "subscription": webhook.id}
        body = json.dumps(payload.event, separators=(",", ":")).encode()
        now = int(time.time())
        headers = {
            "Content-Type": "application/cloudevents+json",
            "User-Agent": "integration-webhooks/1",
            # webhook-id is the delivery's message id: the same for every retry of it.
            **standard_headers(webhook.secret, envelope.id, now, body),
            "X-Integration-Delivery": envelope.id,
            # The same for every redelivery of this delivery; a replay is a new generation.
            "Idempotency-Key": effects.idempotency_key(envelope.id),
            "X-Integration-Topic": payload.topic,
        }
        if legacy_signature():
            headers[LEGACY_SIGNATURE_HEADER] = sign_legacy(webhook.secret, now, body)
        try:
            send = post()
        except ConfigurationError as exc:
            # The service's settings, not the receiver: dead with the reason, not counted
            # against the subscription; replay it once the settings are fixed.
            raise PermanentError(f"the egress settings are unusable: {exc}") from None
        with tracing.span("POST", "client", attributes={
                "http.request.method": "POST", "integration.subscription": webhook.id}) as span:
            # The receiver continues the trace of the event it is sent.
            headers.update(tracing.headers())
            try:
                status = send(webhook.url, body, headers)
            except Exception as exc:
                store.record(webhook.id, ok=False, error=f"{type(exc).__name__}: {exc}"[:200])
                # The delivery's record belongs to the message's owner: name the subscription
                # and host, never the receiver's URL (its path often carries a token).
                raise _without_url(exc, f"POST to subscription {webhook.id} ({webhook.host}) "
                                        f"failed: {type(exc).__name__}") from None
            if span is not None:
                span.set_attribute("http.response.status_code", status)
        if 200 <= status < 300:
            store.record(webhook.id, ok=True)
            return {"subscription": webhook.id, "status_code": status}
        store.record(webhook.id, ok=False, error=f"HTTP {status}")
        if status >= 500 or status in (408, 429):
            raise DownstreamError(status, f"the receiver answered {status}")
        raise PermanentError(f"the receiver refused the delivery with HTTP {status}")

    return MessageType(WEBHOOK_TYPE, WebhookDelivery, deliver,
                       "A signed delivery of an event to a webhook subscription.",
                       target=lambda p: f"webhook:{p.host}", internal=True)
