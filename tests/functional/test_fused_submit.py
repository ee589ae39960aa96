"""A single submit on the store's Redis: its rate-limit hit, idempotency key, record and
message in one transaction (decision 0011), with the limits, answers and refusals of any
other request."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import yaml
from flask import Flask
from redis.connection import AbstractConnection

from integration.ops.embedded_redis import EmbeddedRedis, free_port
from integration.security.tokens import unverified_claims
from tests.conftest import ROOT, TEST_SECRET, bearer, wait_for

METRIC = {"type": "metric", "source": "fused", "data": {"name": "cpu", "value": 1.0}}


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    """'limited' may make 5 requests an hour, 'twenty' 20."""
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({
        "default_rate_limit": "1000/hour",
        "roles": {"limited": {"submit": ["metric"], "read": "own", "rate_limit": "5/hour"},
                  "twenty": {"submit": ["metric"], "read": "own", "rate_limit": "20/hour"}},
    }))
    return path



@pytest.fixture
def limited_app(make_app: Callable[..., Flask], policy_file: Path) -> Flask:
    return make_app(policy_file=str(policy_file), key_prefix=f"fs-{uuid.uuid4().hex[:8]}")


def records_of(app: Flask, owner: str) -> int:
    """How many messages ``owner`` has on record."""
    store = app.extensions["integration"].store
    return int(store.client.zcard(store.keys.index("owner", owner)))


def test_a_submit_is_one_round_trip(limited_app: Flask) -> None:
    """Once the process knows the token, a single submit with an Idempotency-Key sends
    Redis one request: the transaction that counts, claims, records and enqueues."""
    client = limited_app.test_client()
    headers = {**bearer("ann", "limited"), "Idempotency-Key": "warm"}
    assert client.post("/api/v1/messages", json=METRIC, headers=headers).status_code == 202
    sent: list[bytes] = []
    send = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, command: object, check_health: bool = True) -> None:
        sent.append(b"")
        send(self, command, check_health)

    AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        response = client.post("/api/v1/messages", json=METRIC,
                               headers={**headers, "Idempotency-Key": "one"})
    finally:
        AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
    assert response.status_code == 202
    assert len(sent) == 1


def test_a_429_records_enqueues_and_claims_nothing(limited_app: Flask,
                                                    redis_client: redis.Redis) -> None:
    """Over the limit, the problem is the usual 429 with Retry-After, and neither the
    message's record (which exists exactly when its message was pushed: one transaction)
    nor its idempotency key is written."""
    client = limited_app.test_client()
    headers = bearer("bea", "limited")
    for _ in range(5):
        assert client.post("/api/v1/messages", json=METRIC, headers=headers).status_code == 202
    keys = set(redis_client.scan_iter("*idem*"))
    response = client.post("/api/v1/messages", json=METRIC,
                           headers={**headers, "Idempotency-Key": "late"})
    assert response.status_code == 429
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["type"] == "/problems/too-many-requests"
    assert 0 < int(response.headers["Retry-After"]) <= 3601
    assert set(redis_client.scan_iter("*idem*")) == keys
    assert records_of(limited_app, "bea") == 5


def test_a_429_notes_no_link_under_its_cause(limited_app: Flask) -> None:
    """A message caused by another is noted under its cause (for traces) only when it is
    created: an over-limit child leaves the cause's set as it was."""
    client = limited_app.test_client()
    headers = bearer("cal", "limited")
    cause = client.post("/api/v1/messages", json=METRIC, headers=headers).get_json()["id"]
    codes = [client.post("/api/v1/messages", json={**METRIC, "causationid": cause},
                         headers=headers).status_code for _ in range(6)]
    assert codes == [202] * 4 + [429] * 2
    store = limited_app.extensions["integration"].store
    assert store.client.scard(store.keys.caused(cause)) == 4


def test_a_batch_lost_with_its_reply_is_never_replayed_as_accepted(
        limited_app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's Redis stops answering while a batch's transaction is sent: its items are
    503 in doubt, and a repeat with the same Idempotency-Key is refused while the key lasts,
    never answered 202 for messages that may not exist, nor enqueued a second time."""
    from integration.store.connections import ReplyLost

    submitter = limited_app.extensions["integration"].submitter

    def lost(*_args: object, **_kwargs: object) -> None:
        raise ReplyLost("no reply after the commands were sent")

    monkeypatch.setattr(submitter.record_and_enqueue, "create_queued_many", lost)
    client = limited_app.test_client()
    headers = {**bearer("dee", "twenty"), "Idempotency-Key": "lost-batch"}
    first = client.post("/api/v1/messages", json=[METRIC, METRIC], headers=headers)
    assert first.status_code == 503
    assert first.get_json()["enqueued"] == "unknown"
    monkeypatch.undo()
    again = client.post("/api/v1/messages", json=[METRIC, METRIC], headers=headers)
    assert again.status_code == 409, again.get_json()
    assert records_of(limited_app, "dee") == 0


def test_options_answers_the_allowed_methods_without_a_token(limited_app: Flask) -> None:
    """OPTIONS (a CORS preflight) carries no token to check: Flask's answer with the allowed
    methods, with or without one, never a 500."""
    client = limited_app.test_client()
    for headers in ({}, bearer("eli", "limited")):
        response = client.open("/api/v1/messages", method="OPTIONS", headers=headers)
        assert response.status_code == 200
        assert "POST" in response.headers["Allow"]


def test_an_idempotent_repeat_answers_the_same_202(limited_app: Flask) -> None:
    """A repeat with the same key is answered as the first was, replayed, enqueuing
    nothing; like any request it counts against the budget."""
    client = limited_app.test_client()
    headers = {**bearer("cid", "limited"), "Idempotency-Key": "same"}
    first = client.post("/api/v1/messages", json=METRIC, headers=headers)
    repeat = client.post("/api/v1/messages", json=METRIC, headers=headers)
    assert first.status_code == repeat.status_code == 202
    assert repeat.get_json() == first.get_json()
    assert repeat.headers["Location"] == first.headers["Location"]
    assert repeat.headers["Idempotent-Replayed"] == "true"
    assert records_of(limited_app, "cid") == 1
    codes = [client.post("/api/v1/messages", json=METRIC, headers=headers).status_code
             for _ in range(4)]
    assert codes == [202, 202, 202, 429]


def test_refused_and_batched_requests_count_once_each(limited_app: Flask) -> None:
    """A request whose message never reaches the transaction (invalid, forbidden) and a
    batch count one hit each, as every API request does; over the limit they get the 429."""
    client = limited_app.test_client()
    headers = bearer("dan", "limited")
    invalid = {"type": "metric", "source": "fused", "data": {"name": 5}}
    assert client.post("/api/v1/messages", json=invalid, headers=headers).status_code == 422
    assert client.post("/api/v1/messages", json={**METRIC, "type": "action"},
                       headers=headers).status_code == 403
    assert client.post("/api/v1/messages", json=[METRIC, METRIC],
                       headers=headers).status_code == 202
    assert client.post("/api/v1/messages", data=b"{", headers={
        **headers, "Content-Type": "application/json"}).status_code == 400
    assert client.post("/api/v1/messages", json=METRIC, headers=headers).status_code == 202
    assert client.post("/api/v1/messages", json=invalid, headers=headers).status_code == 429
    assert client.post("/api/v1/messages", json=[METRIC],
                       headers=headers).status_code == 429
    assert records_of(limited_app, "dan") == 3


def test_submits_and_other_routes_share_one_budget(limited_app: Flask) -> None:
    """Submits counted in their transaction and reads counted by Flask-Limiter draw on
    the same budget, with the library's own counting."""
    client = limited_app.test_client()
    headers = bearer("eve", "limited")
    codes = []
    for _ in range(3):
        codes += [client.post("/api/v1/messages", json=METRIC, headers=headers).status_code,
                  client.get("/api/v1/messages", headers=headers).status_code]
    assert codes == [202, 200, 202, 200, 202, 429]


def test_a_revoked_token_is_refused(limited_app: Flask, make_app: Callable[..., Flask],
                                    policy_file: Path) -> None:
    """The fused path keeps the token checks: a token revoked in this process is refused
    at once; one revoked by another process within the check interval."""
    client = limited_app.test_client()
    headers = bearer("fay", "limited")
    assert client.post("/api/v1/messages", json=METRIC, headers=headers).status_code == 202
    jti = unverified_claims(headers["Authorization"].split()[1])["jti"]
    limited_app.extensions["integration"].revocations.revoke(jti)
    response = client.post("/api/v1/messages", json=METRIC, headers=headers)
    assert response.status_code == 401
    assert "revoked" in response.get_json()["detail"]
    assert records_of(limited_app, "fay") == 1


def test_without_a_shared_redis_the_limiter_counts(make_app: Callable[..., Flask],
                                                   policy_file: Path,
                                                   private_redis: EmbeddedRedis) -> None:
    """With the broker on another Redis, Flask-Limiter counts the submit as before."""
    app = make_app(policy_file=str(policy_file), broker_url=private_redis.url,
                   key_prefix=f"fs-{uuid.uuid4().hex[:8]}")
    assert not app.extensions["integration"].submitter.counts_limits
    client = app.test_client()
    headers = bearer("gus", "limited")
    codes = [client.post("/api/v1/messages", json=METRIC, headers=headers).status_code
             for _ in range(6)]
    assert codes == [202] * 5 + [429]


@pytest.fixture
def gateway_pair(policy_file: Path, redis_url: str, tmp_path: Path) -> Iterator[list[str]]:
    """Two gunicorn gateways of two worker processes each, on one Redis, with the default
    rate-limit strategy (a sliding window counter)."""
    env = {**os.environ, "INTEGRATION_REDIS_URL": redis_url,
           "INTEGRATION_JWT_SECRET": TEST_SECRET, "INTEGRATION_POLICY_FILE": str(policy_file),
           "INTEGRATION_KEY_PREFIX": f"fs-{uuid.uuid4().hex[:8]}",
           "INTEGRATION_GATEWAY_WORKERS": "2"}
    env.pop("INTEGRATION_RATE_LIMIT_STRATEGY", None)
    ports = [free_port(), free_port()]
    processes = [subprocess.Popen([sys.executable, "-m", "integration", "serve", "--port",
                                   str(port)], cwd=ROOT, env=env,
                                  stdout=(tmp_path / f"{port}.log").open("wb"),
                                  stderr=subprocess.STDOUT)
                 for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url in urls:
            wait_for(lambda url=url: _post(url + "/healthz", {}, None) in (200, 405),
                     timeout=30, message=f"gateway {url}")
        yield urls
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)


def _post(url: str, headers: dict[str, str], body: object) -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={
        **headers, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def test_the_limit_is_exact_across_gateway_processes(gateway_pair: list[str],
                                                     redis_client: redis.Redis) -> None:
    """32 simultaneous submits over four processes against a budget of 20: exactly 20
    are accepted and enqueued."""
    headers = bearer("hal", "twenty")

    def send(index: int) -> int:
        return _post(gateway_pair[index % 2] + "/api/v1/messages",
                     {**headers, "Idempotency-Key": f"k{index}"}, METRIC)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(send, range(32)))
    assert sorted(codes) == [202] * 20 + [429] * 12
    prefix = next(redis_client.scan_iter("fs-*:idx:owner:hal")).decode()
    assert redis_client.zcard(prefix) == 20
