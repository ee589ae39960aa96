"""Fixtures: a real Redis (dedicated database), settings, the gateway app, a real worker."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from integration.app import default_registry, get_settings
from integration.gateway import create_app
from integration.messages.routing import CELERY_QUEUE, DEFAULT_QUEUE
from integration.ops.embedded_redis import EmbeddedRedis, free_port
from integration.security.tokens import issue_token
from integration.settings import Settings
from tests.support.http_target import targets_file

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = "test-secret-" + "x" * 40


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
             message: str = "condition") -> Any:
    """Poll until ``predicate`` returns something truthy; fail with ``message`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The test Redis: ``INTEGRATION_TEST_REDIS_URL`` or a throwaway server; flushed around."""
    url = os.environ.get("INTEGRATION_TEST_REDIS_URL")
    server = None
    if not url:
        server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persistent=False).start()
        url = server.url
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()
    if server:
        server.stop()


#: Where unit tests "find" Redis: nowhere (a port nothing listens on), so a unit test that
#: reaches for it fails at once; functional tests get the test Redis (tests/functional).
NO_REDIS = "redis://127.0.0.1:9/0"


@pytest.fixture(scope="session", autouse=True)
def test_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The settings of every process a test starts (functional tests add the test Redis)."""
    values = {
        "INTEGRATION_REDIS_URL": NO_REDIS,
        "INTEGRATION_JWT_SECRET": TEST_SECRET,
        "INTEGRATION_ENV": "development",
        "INTEGRATION_PUBLISH_TIMEOUT_SECONDS": "2",
        "INTEGRATION_LOG_FORMAT": "json",
        # Types whose handlers fail, sleep and keep a ledger of effects (fault tests).
        "INTEGRATION_TYPE_MODULES": "tests.support.fault_types:TYPES",
        "INTEGRATION_CONSUMER_MODULES": "tests.support.consumers:CONSUMERS",
        "INTEGRATION_OUTBOX_GRACE_SECONDS": "2",
        "INTEGRATION_WEBHOOK_DISABLE_AFTER": "8",
        "INTEGRATION_WEBHOOK_TIMEOUT_SECONDS": "3",
        "INTEGRATION_CLAIM_LEASE_SECONDS": "4",
        "INTEGRATION_RETRY_POLL_INTERVAL_SECONDS": "0.2",
        "INTEGRATION_BREAKER_FAIL_MAX": "3",
        "INTEGRATION_BREAKER_RESET_TIMEOUT_SECONDS": "2",
        "INTEGRATION_LOOP_LIMIT": "3",
        "INTEGRATION_ACTION_RATE_LIMIT": "4/3 seconds",
        # Declared http targets on a local server (tests/support/http_target.py).
        "INTEGRATION_RULES_FILE": str(targets_file(tmp_path_factory.mktemp("targets"))),
        "INTEGRATION_EGRESS_ALLOWLIST": "127.0.0.1/32",
        "INTEGRATION_SECRET_TEST_API_KEY": "test-api-key-never-logged",
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    get_settings.cache_clear()
    default_registry.cache_clear()
    yield values
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()
    default_registry.cache_clear()


def bearer(subject: str, *roles: str, ttl: int = 600) -> dict[str, str]:
    """The Authorization header of a token for ``subject`` with ``roles``."""
    return {"Authorization": f"Bearer {issue_token(TEST_SECRET, subject, list(roles), ttl)}"}


def configured(settings: Settings, **overrides: Any) -> Settings:
    """A validated copy of ``settings`` with ``overrides`` (model_copy would not validate)."""
    return Settings(**{**settings.model_dump(), **overrides})


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, jwt_secret=TEST_SECRET, publish_timeout_seconds=2)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis server of this test's own: no worker consumes it, and nothing else sees it."""
    with EmbeddedRedis(tmp_path / "private-redis", persistent=False) as server:
        yield server


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def make_app(settings: Settings) -> Callable[..., Flask]:
    def build(**overrides: Any) -> Flask:
        return create_app(configured(settings, **overrides))

    return build


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def served_gateway(app: Flask) -> Iterator[str]:
    """The gateway on a real HTTP port (for Alertmanager, a browser, ...)."""
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def token() -> str:
    return issue_token(TEST_SECRET, "tester", ["admin"], 600)


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class WorkerProcess:
    """A real ``celery -A tasks worker`` child process."""

    def __init__(self, queues: list[str], log_path: Path, concurrency: int = 2,
                 env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.name = f"test-{uuid.uuid4().hex[:8]}@%h"
        self.metrics_port = free_port()
        env = {"INTEGRATION_METRICS_PORT": str(self.metrics_port), **(env or {})}
        argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--loglevel", "INFO",
                "--concurrency", str(concurrency), "--hostname", self.name,
                "--queues", ",".join(queues), "--without-gossip", "--without-mingle"]
        self.log = log_path.open("wb")
        self.process = subprocess.Popen(argv, cwd=ROOT, stdout=self.log,
                                        stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})})
        wait_for(self._ready, timeout=60, message=f"worker ready (log {log_path})")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError("worker exited:\n" + self.log_path.read_text()[-3000:])
        return " ready." in self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                # Warm shutdown finishes in-flight tasks at once, but billiard's children may
                # then wait up to 30 s for the parent to read their last result; tests do not.
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="session")
def worker(test_environment: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker consuming every queue, for the whole session."""
    queues = [*default_registry().queues(), DEFAULT_QUEUE, CELERY_QUEUE]
    process = WorkerProcess(queues, tmp_path_factory.mktemp("worker") / "worker.log")
    yield process
    process.stop()


def wait_status(client: FlaskClient, auth: dict[str, str], message_id: str,
                statuses: tuple[str, ...] = ("succeeded", "dead"),
                timeout: float = 20.0) -> dict[str, Any]:
    """Poll the status API until the message reaches one of ``statuses``."""
    def current() -> dict[str, Any] | None:
        response = client.get(f"/api/v1/messages/{message_id}", headers=auth)
        body = response.get_json()
        return body if response.status_code == 200 and body["status"] in statuses else None

    return wait_for(current, timeout=timeout, message=f"message {message_id} in {statuses}")


def delivery_of(client: FlaskClient, auth: dict[str, str], message_id: str, type_name: str,
                timeout: float = 20.0) -> str:
    """The id of the delivery (a ``consumer.<name>`` or ``webhook`` message) that the event of
    ``message_id`` caused, from its trace."""
    def find() -> str | None:
        found = client.get(f"/api/v1/messages/{message_id}/trace", headers=auth).get_json()
        ids = [c["id"] for c in (found or {}).get("caused", []) if c["type"] == type_name]
        return ids[-1] if ids else None

    return str(wait_for(find, timeout=timeout, message=f"{type_name} delivery of {message_id}"))


def submitted_records(client: redis.Redis) -> Callable[[], int]:
    """How many submitted messages were ever recorded (every enqueued message is recorded
    first), not counting deliveries to consumers and webhooks, which the session worker
    records on its own time for earlier tests' messages."""
    types = [t.name for t in default_registry()
             if not t.name.startswith("consumer.") and t.name != "webhook"]
    return lambda: sum(int(cast(int, client.zcard(f"integration:idx:type:{t}")))
                       for t in types)


def purge_keys(client: redis.Redis, pattern: str) -> None:
    """Delete every key matching ``pattern`` (what one test leaves for the next)."""
    keys = list(client.scan_iter(match=pattern))
    if keys:
        client.delete(*keys)


def mine(given: str, owner: str = "tester") -> str:
    """The message id an id given by ``owner`` (the ``auth`` fixture's subject) stands for."""
    from integration.messages.ownership import scoped

    return scoped(owner, given)
