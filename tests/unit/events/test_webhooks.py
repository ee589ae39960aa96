"""A webhook delivery's headers: Standard Webhooks always, the deprecated one while it is on."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as Receiver

from integration.events.webhooks import Webhook, WebhookDelivery, webhook_type
from integration.messages.envelope import Envelope
from integration.messages.retry import PermanentError
from integration.settings import ConfigurationError

SECRET = "an-old-secret-of-16+-characters"  # a subscription made before Standard Webhooks


class _Store:
    """The one subscription a delivery looks up, and what it records."""

    def __init__(self) -> None:
        self.webhook = Webhook(id="w-1", url="https://hooks.example.com/h", topics=["a.*"],
                               secret=SECRET, owner="o", roles=["admin"],
                               created_at="2026-01-01T00:00:00+00:00")
        self.records: list[bool] = []

    def get(self, webhook_id: str) -> Webhook:
        return self.webhook

    def record(self, webhook_id: str, ok: bool, error: str = "") -> None:
        self.records.append(ok)


class _Rights:
    def to_deliver(self, *args: Any) -> None:
        return None


def deliver(legacy: bool) -> tuple[bytes, dict[str, str]]:
    """Run one delivery; return the body and headers that were posted."""
    sent: list[tuple[bytes, dict[str, str]]] = []

    def post(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        sent.append((body, dict(headers)))
        return 204

    store = _Store()
    kind = webhook_type(lambda: store, lambda: post, lambda: _Rights(),  # type: ignore[arg-type,return-value]
                        legacy_signature=lambda: legacy)
    payload = WebhookDelivery(subscription="w-1", host="hooks.example.com", topic="a.succeeded",
                              event={"id": "e-1", "type": "a.succeeded"}, owner="o")
    envelope = Envelope(id="delivery-1", type="webhook", source="test", data={})
    assert kind.handler(payload, envelope) == {"subscription": "w-1", "status_code": 204}
    assert store.records == [True]
    [(body, headers)] = sent
    return body, headers


@pytest.mark.parametrize("legacy", [True, False])
def test_an_existing_subscription_is_signed_for_the_library(legacy: bool) -> None:
    """An old secret's receiver verifies with the library (key: the secret's bytes); the
    deprecated header comes along only while the setting is on."""
    body, headers = deliver(legacy)
    assert headers["webhook-id"] == "delivery-1"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    assert Receiver(SECRET.encode()).verify(body, headers)["id"] == "e-1"
    assert ("X-Integration-Signature" in headers) is legacy


def test_unusable_egress_settings_end_the_delivery_without_blaming_the_receiver() -> None:
    """A bad proxy setting is a permanent error naming it; the subscription's failure count
    is left alone."""
    def unusable() -> None:
        raise ConfigurationError("INTEGRATION_EGRESS_PROXY: must be an http:// URL")

    store = _Store()
    kind = webhook_type(lambda: store, unusable, lambda: _Rights())  # type: ignore[arg-type,return-value]
    payload = WebhookDelivery(subscription="w-1", host="hooks.example.com", topic="a.succeeded",
                              event={"id": "e-1"}, owner="o")
    with pytest.raises(PermanentError, match="INTEGRATION_EGRESS_PROXY"):
        kind.handler(payload, Envelope(id="delivery-1", type="webhook", source="test", data={}))
    assert store.records == []
