"""Outbound webhooks through a real worker to a real local HTTP receiver (allowlisted)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from standardwebhooks.webhooks import Webhook as Receiver
from standardwebhooks.webhooks import WebhookVerificationError

from integration.events.webhooks import SIGNATURE_HEADER, verify
from tests.conftest import delivery_of, wait_for, wait_status
from tests.support.http_target import RecordingServer


@pytest.fixture(autouse=True)
def _remove_subscriptions(client: FlaskClient, auth: dict[str, str]) -> Iterator[None]:
    """Subscriptions are shared by every worker: leave none behind for other tests."""
    yield
    for webhook in client.get("/api/v1/subscriptions", headers=auth).get_json()["items"]:
        client.delete(f"/api/v1/subscriptions/{webhook['id']}", headers=auth)


def subscribe(client: FlaskClient, auth: dict[str, str], url: str,
              topics: list[str]) -> dict[str, Any]:
    response = client.post("/api/v1/subscriptions", headers=auth,
                           json={"url": url, "topics": topics})
    assert response.status_code == 201, response.get_json()
    return dict(response.get_json())


#: The W3C trace context the producing message is sent with; the receiver continues it.
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def produce(client: FlaskClient, auth: dict[str, str], **data: Any) -> str:
    response = client.post("/api/v1/messages", headers={**auth, "traceparent": TRACEPARENT},
                           json={"type": "test.produce", "source": "webhooks",
                                 "data": {"key": uuid.uuid4().hex, **data}})
    assert response.status_code == 202
    return str(response.get_json()["id"])


def test_a_delivery_is_signed_retried_on_500_and_arrives_once(
    client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    """The receiver can verify the signature over the raw body, with the Standard Webhooks
    library and with the deprecated header; a 500 is retried with backoff under the same
    webhook-id; the delivery shows in the trace of the message."""
    with RecordingServer() as receiver:
        path = f"/hook-{uuid.uuid4().hex[:6]}"
        receiver.script(path, 500)
        webhook = subscribe(client, auth, receiver.url(path), ["test.produce.succeeded"])
        assert webhook["enabled"] is True and "secret" in webhook
        assert "secret" not in client.get(f"/api/v1/subscriptions/{webhook['id']}",
                                          headers=auth).get_json()
        message_id = produce(client, auth)
        delivery_id = delivery_of(client, auth, message_id, "webhook")
        record = wait_status(client, auth, delivery_id)
        assert record["status"] == "succeeded" and record["attempts"] == 2
        seen = receiver.seen(path)
        assert len(seen) == 2, "one 500, then the retry"
        last = seen[-1]
        headers = {k.lower(): v for k, v in last.headers.items()}
        assert webhook["secret"].startswith("whsec_")
        assert webhook["signing_secret"] == webhook["secret"]
        assert Receiver(webhook["signing_secret"]).verify(last.body, headers)["subject"] == \
            message_id
        with pytest.raises(WebhookVerificationError):
            Receiver(webhook["signing_secret"]).verify(last.body + b" ", headers)
        assert {s.headers["webhook-id"] for s in seen} == {delivery_id}, \
            "one webhook-id for every attempt of a delivery"
        assert verify(webhook["secret"], headers[SIGNATURE_HEADER.lower()], last.body)
        assert not verify("another-secret-of-16+", headers[SIGNATURE_HEADER.lower()],
                          last.body)
        assert not verify(webhook["secret"], headers[SIGNATURE_HEADER.lower()],
                          last.body + b" ")
        event = json.loads(last.body)
        assert event["type"] == "test.produce.succeeded" and event["subject"] == message_id
        assert headers["content-type"] == "application/cloudevents+json"
        assert headers["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1], \
            "the receiver continues the producing message's trace"
        trace = client.get(f"/api/v1/messages/{message_id}/trace", headers=auth).get_json()
        assert delivery_id in {c["id"] for c in trace["caused"]}


def test_the_breaker_opens_for_a_failing_host_and_nothing_is_lost(
    client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    """Deliveries to a host answering 503 open its breaker and wait deferred; once it
    recovers, every event is delivered exactly once."""
    with RecordingServer() as receiver:
        path = "/down"
        receiver.script(path, *([503] * 6))
        subscribe(client, auth, receiver.url(path), ["test.produce.succeeded"])
        ids = [produce(client, auth) for _ in range(5)]
        deliveries = [delivery_of(client, auth, i, "webhook") for i in ids]

        def breaker_opened() -> bool:
            names = {b["name"]: b for b in client.get("/api/v1/breakers", headers=auth)
                     .get_json()["breakers"]}
            entry = names.get(f"webhook:127.0.0.1:{receiver.port}")
            return entry is not None and entry["state"] in ("open", "half-open")

        wait_for(breaker_opened, timeout=20, message="the host's breaker opened")
        records = [wait_status(client, auth, d, timeout=60) for d in deliveries]
        assert {r["status"] for r in records} == {"succeeded"}
        assert any(any(h["status"] == "deferred" for h in r["history"]) for r in records)
        delivered = [json.loads(s.body)["subject"] for s in receiver.seen(path)
                     if s is not None]
        ok_subjects = delivered[-5:]
        assert sorted(ok_subjects) == sorted(ids), "each event arrived after recovery"


def test_a_private_address_is_refused_unless_allowlisted(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    """Webhook URLs on private, link-local or non-http addresses are refused with a 422."""
    for url in ("http://10.1.2.3/hook", "http://169.254.169.254/latest/meta-data",
                "ftp://127.0.0.1/hook", "http://user:pw@127.0.0.1/hook"):
        response = client.post("/api/v1/subscriptions", headers=auth,
                               json={"url": url, "topics": ["alert.*"]})
        assert response.status_code == 422, url
        assert response.content_type == "application/problem+json"


def test_a_subscription_that_keeps_failing_is_disabled_and_reported(
    client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    """A receiver that refuses every delivery gets its subscription disabled; later events
    are not sent to it, and enabling it again resumes deliveries."""
    with RecordingServer() as receiver:
        path = f"/gone-{uuid.uuid4().hex[:6]}"
        receiver.script(path, *([410] * 50))
        webhook = subscribe(client, auth, receiver.url(path), ["test.produce.succeeded"])
        for _ in range(8):  # INTEGRATION_WEBHOOK_DISABLE_AFTER in the tests
            delivery = delivery_of(client, auth, produce(client, auth), "webhook")
            assert wait_status(client, auth, delivery)["status"] == "dead"
        shown = client.get(f"/api/v1/subscriptions/{webhook['id']}", headers=auth).get_json()
        assert shown["enabled"] is False and "410" in shown["disabled_reason"]
        before = len(receiver.seen(path))
        later = produce(client, auth)
        assert wait_status(client, auth, later)["status"] == "succeeded"
        time.sleep(1)
        assert len(receiver.seen(path)) == before, "a disabled subscription gets nothing"
        enabled = client.post(f"/api/v1/subscriptions/{webhook['id']}/enable", headers=auth)
        assert enabled.status_code == 200 and enabled.get_json()["enabled"] is True
        # Enabled again starts afresh: one more failure does not disable it at once.
        again = delivery_of(client, auth, produce(client, auth), "webhook")
        assert wait_status(client, auth, again)["status"] == "dead"
        assert client.get(f"/api/v1/subscriptions/{webhook['id']}",
                          headers=auth).get_json()["enabled"] is True


def test_subscriptions_need_the_permission(client: FlaskClient) -> None:
    """Managing subscriptions needs ``manage:subscriptions``; topics need ``subscribe``."""
    from integration.security.tokens import issue_token
    from tests.conftest import TEST_SECRET

    reader = {"Authorization": f"Bearer {issue_token(TEST_SECRET, 'r', ['reader'], 60)}"}
    response = client.post("/api/v1/subscriptions", headers=reader,
                           json={"url": "https://example.com/h", "topics": ["alert.*"]})
    assert response.status_code == 403
    assert client.get("/api/v1/subscriptions", headers=reader).status_code == 403
