"""Idempotency-Key: one effect per key and body, scoped by owner, 409 while in flight."""

from __future__ import annotations

from collections.abc import Callable

import redis
from flask import Flask
from flask.testing import FlaskClient

from integration.gateway.runtime import Runtime
from integration.ops.embedded_redis import free_port
from integration.security.tokens import issue_token
from integration.store.idempotency import fingerprint
from tests.conftest import TEST_SECRET

METRIC = {"type": "metric", "source": "idem", "data": {"name": "cpu", "value": 2.0}}


def headers(subject: str, key: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(TEST_SECRET, subject, ["monitoring"]),
            "Idempotency-Key": f'"{key}"'}


def test_a_repeat_gets_the_first_answer_and_enqueues_nothing(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    # Metric records only: the session worker's loop records messages of other types meanwhile.
    before = redis_client.zcard("integration:idx:type:metric")
    first = client.post("/api/v1/messages", json=METRIC, headers=headers("alice", "k-1"))
    again = client.post("/api/v1/messages", json=METRIC, headers=headers("alice", "k-1"))
    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert redis_client.zcard("integration:idx:type:metric") == before + 1


def test_the_same_key_with_another_body_is_422(client: FlaskClient) -> None:
    assert client.post("/api/v1/messages", json=METRIC,
                       headers=headers("alice", "k-2")).status_code == 202
    other = {**METRIC, "data": {"name": "cpu", "value": 3.0}}
    response = client.post("/api/v1/messages", json=other, headers=headers("alice", "k-2"))
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["type"] == "key_reused"


def test_keys_are_scoped_by_owner(client: FlaskClient) -> None:
    """Another owner's key never reveals or returns the first owner's message."""
    mine = client.post("/api/v1/messages", json=METRIC, headers=headers("alice", "shared"))
    theirs = client.post("/api/v1/messages", json=METRIC, headers=headers("bob", "shared"))
    assert mine.status_code == theirs.status_code == 202
    assert mine.get_json()["id"] != theirs.get_json()["id"]


def test_a_repeat_while_the_first_is_in_flight_is_409(app: Flask, client: FlaskClient) -> None:
    """A reserved key (a batch, or another gateway's request in flight) is seen by the
    transaction that would enqueue a single message: nothing is enqueued."""
    runtime: Runtime = app.extensions["integration"]
    body = b'{"type":"metric","source":"idem","data":{"name":"cpu","value":2.0}}'
    assert runtime.idempotency.reserve("alice", "k-3", fingerprint(body)) is None
    response = client.post("/api/v1/messages", data=body, content_type="application/json",
                           headers=headers("alice", "k-3"))
    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"


def test_a_failed_request_frees_its_key(make_app: Callable[..., Flask]) -> None:
    """Nothing was accepted (503), so the same key may be used again once the broker is back."""
    broken = make_app(broker_url=f"redis://127.0.0.1:{free_port()}/0").test_client()
    assert broken.post("/api/v1/messages", json=METRIC,
                       headers=headers("carol", "k-4")).status_code == 503
    healthy = make_app().test_client()
    assert healthy.post("/api/v1/messages", json=METRIC,
                        headers=headers("carol", "k-4")).status_code == 202


def test_batches_are_idempotent_too(client: FlaskClient) -> None:
    batch = [METRIC, {**METRIC, "data": {"name": "mem", "value": 1.0}}]
    first = client.post("/api/v1/messages", json=batch, headers=headers("dave", "k-5"))
    again = client.post("/api/v1/messages", json=batch, headers=headers("dave", "k-5"))
    assert [r["id"] for r in again.get_json()["results"]] == \
        [r["id"] for r in first.get_json()["results"]]


def test_an_unusable_key_is_422(client: FlaskClient) -> None:
    response = client.post("/api/v1/messages", json=METRIC,
                           headers=headers("erin", "x" * 300))
    assert response.status_code == 422


def test_concurrent_repeats_of_one_message_enqueue_it_once(
        app: Flask, redis_client: redis.Redis) -> None:
    """A single message takes its key in the transaction that enqueues it: of twelve
    simultaneous requests with one key, one message is enqueued and every other request is
    answered with that message's 202 (or 409 while it is in flight), never a second copy."""
    import concurrent.futures

    before = redis_client.zcard("integration:idx:type:metric")
    body = {**METRIC, "source": "idem-race"}

    def send(_: int) -> tuple[int, dict[str, object]]:
        response = app.test_client().post("/api/v1/messages", json=body,
                                          headers=headers("race", "k-race"))
        return response.status_code, response.get_json()

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(send, range(12)))
    accepted = [reply for status, reply in answers if status == 202]
    assert {status for status, _ in answers} <= {202, 409}
    assert len({reply["id"] for reply in accepted}) == 1
    assert redis_client.zcard("integration:idx:type:metric") == before + 1
    runtime: Runtime = app.extensions["integration"]
    assert runtime.submitter.completes_answers  # the claiming path was the one exercised
    assert runtime.idempotency.reserve("race", "k-race", "x").state == "done"  # type: ignore[union-attr]

