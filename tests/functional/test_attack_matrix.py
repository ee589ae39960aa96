"""The attack matrix over the real gateway, with a broker no worker reads: every refused
request answers its status and problem document and leaves nothing behind (no status record,
nothing in any queue)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from integration.app import default_registry
from integration.ops.embedded_redis import EmbeddedRedis
from integration.security.tokens import issue_token
from tests.conftest import TEST_SECRET

METRIC = {"type": "metric", "source": "matrix", "data": {"name": "cpu", "value": 1.0}}


def token(*roles: str, secret: str = TEST_SECRET, **claims: Any) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(secret, "mallory", roles, 600, **claims)}


def raw(body: bytes, content_type: str = "application/json") -> dict[str, Any]:
    return {"data": body, "content_type": content_type}


ADMIN = token("admin")
#: (case, request keyword arguments, expected status, expected problem type slug)
CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("no token", {"json": METRIC}, 401, "unauthorized"),
    ("forged token", {"json": METRIC, "headers": token("admin", secret="x" * 40)}, 401,
     "unauthorized"),
    ("expired token", {"json": METRIC, "headers": {"Authorization": "Bearer " + jwt.encode(
        {"sub": "m", "roles": ["admin"], "exp": int(time.time()) - 60, "type": "access"},
        TEST_SECRET)}}, 401, "unauthorized"),
    ("unsigned token", {"json": METRIC, "headers": {"Authorization": "Bearer " + jwt.encode(
        {"sub": "m", "roles": ["admin"], "exp": int(time.time()) + 60}, None, "none")}},
     401, "unauthorized"),
    ("role may not submit type", {"json": {**METRIC, "type": "action", "data": {
        "action": "rm", "target": "db"}}, "headers": token("monitoring")}, 403, "forbidden"),
    ("no role", {"json": METRIC, "headers": token()}, 403, "forbidden"),
    ("owner in body", {"json": {**METRIC, "owner": "root"}, "headers": ADMIN}, 422,
     "invalid-message"),
    ("unknown type", {"json": {**METRIC, "type": "shell"}, "headers": ADMIN}, 422,
     "invalid-message"),
    ("extra payload field", {"json": {**METRIC, "data": {"name": "c", "value": 1,
                                                         "cmd": "rm -rf /"}},
                             "headers": ADMIN}, 422, "invalid-message"),
    ("string for number", {"json": {**METRIC, "data": {"name": "c", "value": "1"}},
                           "headers": ADMIN}, 422, "invalid-message"),
    ("NaN", {**raw(b'{"type":"metric","source":"s","data":{"name":"c","value":NaN}}'),
             "headers": ADMIN}, 422, "invalid-message"),
    ("huge integer", {**raw(b'{"type":"event","source":"s","data":{"n":' + b"9" * 60_000
                            + b"}}"), "headers": ADMIN}, 422, "invalid-message"),
    ("deep nesting", {**raw(b'{"type":"event","source":"s","data":{"x":' + b"[" * 30_000
                            + b"]" * 30_000 + b"}}"), "headers": ADMIN}, 422,
     "invalid-message"),
    ("malformed JSON", {**raw(b'{"type":'), "headers": ADMIN}, 400, "malformed-json"),
    ("invalid UTF-8", {**raw(b'{"type":"\xff"}'), "headers": ADMIN}, 400, "malformed-json"),
    ("form body", {**raw(b"type=metric", "application/x-www-form-urlencoded"),
                   "headers": ADMIN}, 415, "unsupported-media-type"),
    ("body too large", {**raw(json.dumps({**METRIC, "data": {"pad": "x" * 70_000}}).encode()),
                        "headers": ADMIN}, 413, "request-entity-too-large"),
    ("batch too large", {"json": [METRIC] * 11, "headers": ADMIN}, 413, "payload-too-large"),
    ("pickle-like id", {"json": {**METRIC, "id": "../../etc/passwd"}, "headers": ADMIN}, 422,
     "invalid-message"),
]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("matrix"), persistent=False) as server:
        yield server


@pytest.fixture
def client(make_app: Callable[..., Flask], broker: EmbeddedRedis) -> FlaskClient:
    # Store and broker on the unread instance, so that anything left behind shows.
    return make_app(redis_url=broker.url, max_body_bytes=65_536, batch_limit=10,
                    anonymous_rate_limit="100000/second").test_client()


@pytest.mark.parametrize("case, request_args, status, slug", CASES, ids=[c[0] for c in CASES])
def test_attack_is_refused_and_leaves_nothing(client: FlaskClient, broker: EmbeddedRedis,
                                              case: str, request_args: dict[str, Any],
                                              status: int, slug: str) -> None:
    started = time.monotonic()
    response = client.post("/api/v1/messages", **request_args)
    assert time.monotonic() - started < 2, "refused in bounded time"
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/problem+json"
    document = response.get_json()
    assert document["status"] == status and document["type"] == f"/problems/{slug}"
    body = response.get_data(as_text=True)
    assert "eyJ" not in body and "rm -rf" not in body  # no token or value echoed
    store = redis.Redis(port=broker.port)
    assert store.zcard("integration:idx:all") == 0, "no status record"
    assert all(store.llen(q) == 0 for q in default_registry().queues()), "nothing queued"


def test_the_matrix_client_does_accept_a_valid_message(client: FlaskClient,
                                                       broker: EmbeddedRedis) -> None:
    """The same setup accepts a valid message, so the refusals above are not an artefact."""
    response = client.post("/api/v1/messages", json=METRIC, headers=ADMIN)
    assert response.status_code == 202
    assert redis.Redis(port=broker.port).llen("metric") == 1
    redis.Redis(port=broker.port).flushdb()
