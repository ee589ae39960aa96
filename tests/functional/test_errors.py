"""Every rejection is an RFC 9457 problem document with the right status, and enqueues nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from integration.ops.embedded_redis import free_port
from integration.security.tokens import issue_token
from tests.conftest import TEST_SECRET, configured, submitted_records

METRIC = {"type": "metric", "source": "tests", "data": {"name": "cpu", "value": 1.0}}


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    document = response.get_json()
    assert document["status"] == status
    assert document["type"] == f"/problems/{slug}"
    assert document["title"]
    return document


@pytest.fixture
def queue_lengths(redis_client: redis.Redis) -> Callable[[], int]:
    return submitted_records(redis_client)


def test_malformed_json_is_400(client: FlaskClient, auth: dict[str, str]) -> None:
    """A body that is not JSON is 400, with no stack trace."""
    response = client.post("/api/v1/messages", data=b'{"type": ', headers=auth,
                           content_type="application/json")
    document = assert_problem(response, 400, "malformed-json")
    assert "Traceback" not in document["detail"]


@pytest.mark.parametrize("value, kind", [
    (b"NaN", "finite_number"), (b"Infinity", "finite_number"), (b"-Infinity", "finite_number"),
    (b"1e400", "finite_number"), (b"9" * 5000, "finite_number"),
    (b"9223372036854775808", "int_range"),
])
def test_numbers_out_of_range_are_422_quickly(client: FlaskClient, auth: dict[str, str],
                                              value: bytes, kind: str) -> None:
    """NaN, infinities and huge numbers are refused with 422, in bounded time."""
    body = b'{"type": "event", "source": "t", "data": {"n": ' + value + b"}}"
    started = time.monotonic()
    response = client.post("/api/v1/messages", data=body, headers=auth,
                           content_type="application/json")
    assert time.monotonic() - started < 1
    document = assert_problem(response, 422, "invalid-message")
    assert document["errors"][0] == {"loc": ["data", "n"], "msg": document["errors"][0]["msg"],
                                     "type": kind}


@pytest.mark.parametrize("depth", [33, 5000, 100_000])
def test_deep_nesting_is_422(client: FlaskClient, auth: dict[str, str], depth: int) -> None:
    """Nesting past the configured depth is refused, however deep, never a 500."""
    body = (b'{"type": "event", "source": "t", "data": {"x": ' + b"[" * depth + b"]" * depth
            + b"}}")
    response = client.post("/api/v1/messages", data=body, headers=auth,
                           content_type="application/json")
    document = assert_problem(response, 422, "invalid-message")
    assert document["errors"][0]["type"] == "too_deep"


def test_overlong_strings_are_422(make_app: Callable[..., Flask], auth: dict[str, str]) -> None:
    client = make_app(max_string_length=100).test_client()
    response = client.post("/api/v1/messages", headers=auth, json={
        "type": "event", "source": "t", "data": {"note": "x" * 101}})
    document = assert_problem(response, 422, "invalid-message")
    assert document["errors"][0]["loc"] == ["data", "note"]


def test_strict_types_refuse_numbers_in_strings(client: FlaskClient,
                                                auth: dict[str, str]) -> None:
    """No silent coercion: "97.5" is not a number."""
    response = client.post("/api/v1/messages", headers=auth, json={
        "type": "metric", "source": "t", "data": {"name": "cpu", "value": "97.5"}})
    document = assert_problem(response, 422, "invalid-message")
    assert document["errors"][0]["loc"] == ["data", "value"]


def test_wrong_content_type_is_415(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/api/v1/messages", data="type=metric", headers=auth,
                           content_type="application/x-www-form-urlencoded")
    assert_problem(response, 415, "unsupported-media-type")


def test_body_over_the_limit_is_413(make_app: Callable[..., Flask], auth: dict[str, str],
                                    queue_lengths: Callable[[], int]) -> None:
    """A body over INTEGRATION_MAX_BODY_BYTES is refused before it is parsed."""
    client = make_app(max_body_bytes=2048).test_client()
    before = queue_lengths()
    body = {**METRIC, "data": {"name": "x" * 4000, "value": 1.0}}
    response = client.post("/api/v1/messages", json=body, headers=auth)
    assert_problem(response, 413, "request-entity-too-large")
    assert queue_lengths() == before


def test_batch_over_the_limit_is_413(make_app: Callable[..., Flask],
                                     auth: dict[str, str]) -> None:
    client = make_app(batch_limit=3).test_client()
    response = client.post("/api/v1/messages", json=[METRIC] * 4, headers=auth)
    document = assert_problem(response, 413, "payload-too-large")
    assert "3" in document["detail"]


def test_unknown_type_is_422(client: FlaskClient, auth: dict[str, str],
                             queue_lengths: Callable[[], int]) -> None:
    before = queue_lengths()
    response = client.post("/api/v1/messages", headers=auth,
                           json={"type": "no.such.type", "source": "tests", "data": {}})
    document = assert_problem(response, 422, "invalid-message")
    assert document["errors"][0]["loc"] == ["type"]
    assert document["errors"][0]["type"] == "unknown_type"
    assert queue_lengths() == before


def test_invalid_payload_is_422_with_each_field_and_no_echo(
    client: FlaskClient, auth: dict[str, str], queue_lengths: Callable[[], int]
) -> None:
    """Each invalid field is located; the submitted values are not echoed back."""
    before = queue_lengths()
    secret_looking = "s3cr3t-value-should-not-echo"
    response = client.post("/api/v1/messages", headers=auth, json={
        "type": "metric", "source": "tests",
        "data": {"name": "", "value": secret_looking, "bogus": secret_looking},
    })
    document = assert_problem(response, 422, "invalid-message")
    locations = {tuple(error["loc"]) for error in document["errors"]}
    assert locations == {("data", "name"), ("data", "value"), ("data", "bogus")}
    assert secret_looking not in response.get_data(as_text=True)
    assert queue_lengths() == before


@pytest.mark.parametrize("envelope, location", [
    ({"type": "metric", "data": {}}, ["source"]),
    ({"type": "metric", "source": "t", "specversion": "0.3", "data": {}}, ["specversion"]),
    ({"type": "metric", "source": "t", "id": "has spaces", "data": {}}, ["id"]),
    ({"type": "metric", "source": "t", "time": "yesterday", "data": {}}, ["time"]),
    ({"type": "metric", "source": "t", "Not_An_Extension": 1, "data": {}}, []),
])
def test_invalid_envelope_is_422(client: FlaskClient, auth: dict[str, str],
                                 envelope: dict[str, Any], location: list[str]) -> None:
    """Envelope attributes are checked; unknown attributes must be valid extension names."""
    response = client.post("/api/v1/messages", headers=auth, json=envelope)
    document = assert_problem(response, 422, "invalid-message")
    assert document["errors"][0]["loc"] == location


def test_message_must_be_an_object(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/api/v1/messages", headers=auth, json="metric")
    assert_problem(response, 422, "invalid-message")


def test_unknown_message_id_is_404(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.get("/api/v1/messages/does-not-exist", headers=auth)
    assert_problem(response, 404, "not-found")


def test_unknown_route_and_method_are_problems(client: FlaskClient,
                                               auth: dict[str, str]) -> None:
    assert_problem(client.get("/api/v1/nothing", headers=auth), 404, "not-found")
    response = client.delete("/api/v1/types", headers=auth)
    assert_problem(response, 405, "method-not-allowed")
    assert "GET" in response.headers["Allow"]


def test_invalid_list_query_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.get("/api/v1/messages", query_string={"status": "bogus"}, headers=auth)
    document = assert_problem(response, 422, "invalid-message")
    assert document["errors"][0]["loc"] == ["query", "status"]


@pytest.mark.parametrize("make_header", [
    lambda: {},
    lambda: {"Authorization": "Bearer"},
    lambda: {"Authorization": "Basic dXNlcjpwYXNz"},
    lambda: {"Authorization": "Bearer not-a-jwt"},
    lambda: {"Authorization": "Bearer " + issue_token("another-secret-" + "y" * 40, "x")},
    lambda: {"Authorization": "Bearer " + issue_token(TEST_SECRET, "x", ttl_seconds=-120)},
    lambda: {"Authorization": "Bearer " + jwt.encode(
        {"sub": "x", "exp": int(time.time()) + 60, "type": "access"}, key=None,
        algorithm="none")},
], ids=["missing", "empty", "basic", "garbage", "wrong-key", "expired", "alg-none"])
def test_every_bad_token_is_401(client: FlaskClient, make_header: Callable[[], dict[str, str]],
                                queue_lengths: Callable[[], int]) -> None:
    """Missing, malformed, forged, expired and unsigned tokens are all 401 problems."""
    before = queue_lengths()
    response = client.post("/api/v1/messages", json=METRIC, headers=make_header())
    assert_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert queue_lengths() == before


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_broker_unavailable_is_503_with_retry_after_and_nothing_recorded(
    make_app: Callable[..., Flask], auth: dict[str, str], scheme: str
) -> None:
    """When the broker cannot be reached the answer is 503, never 202, within the timeout."""
    dead_broker = f"{scheme}://127.0.0.1:{free_port()}/0"
    app = make_app(broker_url=dead_broker, publish_timeout_seconds=1, retry_after_seconds=7)
    client = app.test_client()
    started = time.monotonic()
    message_id = f"never-enqueued-{scheme}"
    response = client.post("/api/v1/messages", json={**METRIC, "id": message_id}, headers=auth)
    assert time.monotonic() - started < 5
    assert_problem(response, 503, "service-unavailable")
    assert response.headers["Retry-After"] == "7"
    assert response.get_json()["unreachable"] == "broker"
    assert client.get(f"/api/v1/messages/{message_id}", headers=auth).status_code == 404
    ready = client.get("/readyz")
    assert_problem(ready, 503, "service-unavailable")
    assert ready.get_json()["checks"]["broker"].startswith("unreachable")
    assert "the broker cannot be reached" in ready.get_json()["detail"]


def test_store_unavailable_is_503(make_app: Callable[..., Flask], auth: dict[str, str],
                                  redis_url: str) -> None:
    """Without the status store nothing is accepted either."""
    client = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0", broker_url=redis_url,
                      publish_timeout_seconds=1).test_client()
    response = client.post("/api/v1/messages", json=METRIC, headers=auth)
    assert_problem(response, 503, "service-unavailable")
    assert response.json is not None and response.json["unreachable"] == "store"


def test_duplicate_id_is_409(client: FlaskClient, auth: dict[str, str]) -> None:
    """A second message with an id already in use is refused, leaving the first intact."""
    body = {**METRIC, "id": "dup-id-409"}
    first = client.post("/api/v1/messages", json=body, headers=auth)
    assert first.status_code == 202
    second = client.post("/api/v1/messages", json={**body, "source": "other"}, headers=auth)
    assert_problem(second, 409, "conflict")
    record = client.get("/api/v1/messages/dup-id-409", headers=auth).get_json()
    assert record["envelope"]["source"] == "tests"


def test_gateway_refuses_to_start_without_a_secret(settings: Any) -> None:
    """A missing INTEGRATION_JWT_SECRET stops start-up with a message naming it."""
    from integration.gateway import create_app
    from integration.settings import ConfigurationError

    with pytest.raises(ConfigurationError, match="INTEGRATION_JWT_SECRET"):
        create_app(configured(settings, jwt_secret=None))
