"""Rate limits: per subject and per role, per address when unauthenticated, shared in Redis."""

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

from integration.ops.embedded_redis import free_port
from tests.conftest import ROOT, TEST_SECRET, bearer, wait_for

METRIC = {"type": "metric", "source": "limits", "data": {"name": "cpu", "value": 1.0}}


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    """A policy whose 'limited' role may make 5 requests an hour."""
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({
        "default_rate_limit": "1000/hour",
        "roles": {"limited": {"submit": ["metric"], "read": "own", "rate_limit": "5/hour"},
                  "roomy": {"submit": ["metric"], "read": "own", "rate_limit": "50/hour"}},
    }))
    return path



@pytest.fixture
def limited_app(make_app: Callable[..., Flask], policy_file: Path) -> Flask:
    # A moving window has no boundary for the test to straddle.
    return make_app(policy_file=str(policy_file), rate_limit_strategy="moving-window",
                    anonymous_rate_limit="3/hour", key_prefix=f"rl-{uuid.uuid4().hex[:8]}",
                    rate_limit_headers=True)


def test_a_subject_over_its_role_limit_gets_429(limited_app: Flask) -> None:
    client = limited_app.test_client()
    alice = bearer("alice", "limited")
    codes = [client.post("/api/v1/messages", json=METRIC, headers=alice).status_code
             for _ in range(7)]
    assert codes == [202] * 5 + [429] * 2
    response = client.get("/api/v1/messages", headers=alice)
    assert response.status_code == 429
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["type"] == "/problems/too-many-requests"
    assert 0 < int(response.headers["Retry-After"]) <= 3601
    assert response.headers["X-RateLimit-Remaining"] == "0"
    # Another subject has its own budget, and a role's limit is its own.
    assert client.post("/api/v1/messages", json=METRIC,
                       headers=bearer("bob", "limited")).status_code == 202
    roomy = [client.post("/api/v1/messages", json=METRIC,
                         headers=bearer("carol", "roomy")).status_code for _ in range(7)]
    assert roomy == [202] * 7


def test_unauthenticated_routes_are_limited_per_address(limited_app: Flask) -> None:
    client = limited_app.test_client()
    codes = [client.get("/openapi.json").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    # Probes are never limited.
    assert {client.get("/healthz").status_code for _ in range(5)} == {200}


def test_successful_responses_carry_no_retry_after(limited_app: Flask) -> None:
    response = limited_app.test_client().get("/api/v1/messages",
                                              headers=bearer("dave", "limited"))
    assert response.status_code == 200
    assert "Retry-After" not in response.headers
    assert response.headers["X-RateLimit-Limit"] == "5"


@pytest.fixture
def two_gateways(policy_file: Path, redis_url: str, tmp_path: Path) -> Iterator[list[str]]:
    """Two gateway processes (gunicorn, one worker each) sharing one Redis."""
    env = {**os.environ, "INTEGRATION_REDIS_URL": redis_url,
           "INTEGRATION_JWT_SECRET": TEST_SECRET, "INTEGRATION_POLICY_FILE": str(policy_file),
           "INTEGRATION_RATE_LIMIT_STRATEGY": "moving-window",
           "INTEGRATION_KEY_PREFIX": f"rl-{uuid.uuid4().hex[:8]}",
           "INTEGRATION_GATEWAY_WORKERS": "1"}
    ports = [free_port(), free_port()]
    processes = [subprocess.Popen([sys.executable, "-m", "integration", "serve", "--port",
                                   str(port)], cwd=ROOT, env=env,
                                  stdout=(tmp_path / f"{port}.log").open("wb"),
                                  stderr=subprocess.STDOUT)
                 for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url in urls:
            wait_for(lambda url=url: _status(url + "/healthz") == 200, timeout=30,
                     message=f"gateway {url}")
        yield urls
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)


def _status(url: str, headers: dict[str, str] | None = None, body: object = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={
        **(headers or {}), "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def test_the_limit_is_shared_by_every_gateway_process(two_gateways: list[str]) -> None:
    """Requests spread over two processes are counted together: exactly 5 pass."""
    headers = bearer("erin", "limited")
    codes = [_status(two_gateways[i % 2] + "/api/v1/messages", headers, METRIC)
             for i in range(10)]
    assert sorted(codes) == [202] * 5 + [429] * 5
    assert codes[:5] == [202] * 5


def test_by_default_a_429_carries_retry_after_and_no_rate_limit_headers(
        make_app: Callable[..., Flask], policy_file: Path) -> None:
    """The X-RateLimit-* headers are opt-in (each costs a Redis read per request); the 429
    still says when to come back."""
    app = make_app(policy_file=str(policy_file), rate_limit_strategy="moving-window",
                   key_prefix=f"rl-{uuid.uuid4().hex[:8]}")
    client = app.test_client()
    erin = bearer("erin", "limited")
    answers = [client.post("/api/v1/messages", json=METRIC, headers=erin) for _ in range(6)]
    assert [a.status_code for a in answers] == [202] * 5 + [429]
    assert not any(h.startswith("X-RateLimit") for a in answers for h, _ in a.headers)
    assert 0 < int(answers[-1].headers["Retry-After"]) <= 3601


@pytest.mark.parametrize("strategy", ["sliding-window-counter", "moving-window",
                                      "fixed-window"])
def test_simultaneous_requests_share_round_trips_but_each_counts_once(
        make_app: Callable[..., Flask], policy_file: Path, strategy: str,
        redis_client: redis.Redis) -> None:
    """Hits of concurrent requests of one process go to Redis together (Flask-Limiter's, and
    a single submit's in its message's transaction); the budget still admits exactly its
    number of requests (5 of 16 at once here), whatever the strategy, and a refused submit
    enqueues nothing."""
    from integration.gateway.limits import EXTENSION_KEY
    from integration.gateway.ratelimitstore import CoalescedRedisStorage

    app = make_app(policy_file=str(policy_file), rate_limit_strategy=strategy,
                   key_prefix=f"rl-{uuid.uuid4().hex[:8]}")
    storage = app.extensions[EXTENSION_KEY].limiter.storage
    assert isinstance(storage, CoalescedRedisStorage)
    round_trips: list[int] = []
    flush = storage._calls._flush
    storage._calls._flush = lambda calls: round_trips.append(len(calls)) or flush(calls)

    def read(_: int) -> int:
        return app.test_client().get("/api/v1/messages",
                                     headers=bearer("frank", "limited")).status_code

    def submit(_: int) -> int:
        return app.test_client().post("/api/v1/messages", json=METRIC,
                                      headers=bearer("grace", "limited")).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(read, range(16)))
    assert sorted(codes) == [200] * 5 + [429] * 11
    assert sum(round_trips) == 16  # every request's hit was sent, once
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(submit, range(16)))
    assert sorted(codes) == [202] * 5 + [429] * 11
    assert sum(round_trips) == 16  # the submits' hits went with their messages
    store = app.extensions["integration"].store
    assert redis_client.zcard(store.keys.index("owner", "grace")) == 5


def test_rate_limit_hits_survive_a_redis_that_forgot_its_scripts(
        make_app: Callable[..., Flask], policy_file: Path, tmp_path: Path) -> None:
    """After a Redis restart (scripts gone), the next hits load them and still count."""
    from integration.ops.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis", persistent=False).start()
    try:
        app = make_app(policy_file=str(policy_file), redis_url=server.url)
        client = app.test_client()
        gina = bearer("gina", "limited")
        assert client.post("/api/v1/messages", json=METRIC, headers=gina).status_code == 202
        redis.Redis.from_url(server.url).script_flush()
        codes = [client.post("/api/v1/messages", json=METRIC, headers=gina).status_code
                 for _ in range(5)]
        assert codes == [202] * 4 + [429]
    finally:
        server.stop()
