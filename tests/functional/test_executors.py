"""The http executor end to end: gateway, a real worker, declared targets on a local server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import WorkerProcess, wait_for, wait_status
from tests.support.http_target import TARGETS_PORT, RecordingServer

SECRET = "test-api-key-never-logged"  # INTEGRATION_SECRET_TEST_API_KEY of the test environment


@pytest.fixture(scope="module")
def target_server() -> Iterator[RecordingServer]:
    """The server behind the declared targets on 127.0.0.1 (tests/support/targets.yaml)."""
    with RecordingServer("127.0.0.1", TARGETS_PORT) as server:
        yield server


@pytest.fixture(scope="module")
def unlisted_server() -> Iterator[RecordingServer]:
    """A server on 127.0.0.2, a loopback address the test allowlist does not name."""
    with RecordingServer("127.0.0.2", TARGETS_PORT) as server:
        yield server


def act(client: FlaskClient, auth: dict[str, str], target: str, **data: Any) -> tuple[str, str]:
    """Submit an http action on ``target`` under a fresh action name (no loop detection)."""
    action = f"restart-{uuid.uuid4().hex[:8]}"
    response = client.post("/api/v1/messages", headers=auth, json={
        "type": "action", "source": "executor-tests",
        "data": {"action": action, "target": target, "executor": "http", **data}})
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["id"]), action


def breaker(client: FlaskClient, auth: dict[str, str], name: str) -> dict[str, Any] | None:
    breakers = client.get("/api/v1/breakers", headers=auth).get_json()["breakers"]
    return next((b for b in breakers if b["name"] == name), None)


def test_an_http_action_calls_its_declared_target_once(
    client: FlaskClient, auth: dict[str, str], worker: WorkerProcess,
    target_server: RecordingServer,
) -> None:
    """The declared method, URL, headers and rendered body are sent once, and the message
    succeeds with the answer's status; the secret header is in neither result nor log."""
    message_id, action = act(client, auth, "test-restart", parameters={"replicas": 2})
    record = wait_status(client, auth, message_id)
    assert record["status"] == "succeeded", record.get("error")

    calls = [s for s in target_server.seen("/restart") if s.json().get("reason") == action]
    assert len(calls) == 1
    [call] = calls
    assert call.method == "PUT" and call.path == "/restart?source=tests"
    assert call.json() == {"service": "test-restart", "reason": action, "replicas": 2,
                           "note": "restart 2 of test-restart"}
    assert call.headers["X-Api-Key"] == SECRET
    # The message id and its delivery generation: a redelivery sends the same key.
    assert call.headers["Idempotency-Key"] == f"{message_id}:{record['generation']}"

    result = record["result"]
    assert result["status"] == 200 and result["executed"] is True
    assert result["url"] == f"http://127.0.0.1:{TARGETS_PORT}/restart"
    assert result["duration_ms"] >= 0
    assert '"path": "/restart"' in result["response"]["excerpt"]
    assert "[redacted]" in result["response"]["excerpt"]  # the server echoed the header
    assert SECRET not in json.dumps(record)
    assert SECRET not in worker.log_path.read_text(errors="replace")


def test_a_failing_target_is_retried_until_it_recovers(
    client: FlaskClient, auth: dict[str, str], worker: WorkerProcess,
    target_server: RecordingServer,
) -> None:
    """Two 500 answers are retried with backoff; the third attempt succeeds."""
    target_server.script("/flaky", 500, 500)
    message_id, action = act(client, auth, "test-flaky")
    record = wait_status(client, auth, message_id, timeout=30)
    assert record["status"] == "succeeded", record.get("error")
    assert record["attempts"] == 3
    assert record["result"]["status"] == 200
    retried = [h for h in record["history"] if h["status"] == "retrying"]
    assert len(retried) == 2
    assert "answered 500" in retried[0]["error"]["message"]
    assert retried[0]["error"]["type"] == "DownstreamError"
    assert len(target_server.seen("/flaky")) == 3
    # The failures were counted by the breaker of this declared target, not of its URL.
    assert breaker(client, auth, "http:test-flaky") is not None


def test_an_undeclared_target_is_dead_with_a_clear_error(
    client: FlaskClient, auth: dict[str, str], worker: WorkerProcess,
) -> None:
    """A message cannot name a URL or an unlisted target: dead at once, saying why."""
    for target, reason in (("https://evil.example/x", "is not declared"),
                           ("test-logged", "declared for the log executor")):
        message_id, _ = act(client, auth, target)
        record = wait_status(client, auth, message_id)
        assert record["status"] == "dead"
        assert record["attempts"] == 1
        assert record["error"]["type"] == "UndeclaredTarget"
        assert reason in record["error"]["message"]


@pytest.mark.parametrize("target, reason", [("test-private", "(private)"),
                                            ("test-other-loopback", "(loopback)")])
def test_a_declared_target_outside_the_allowlist_is_refused(
    client: FlaskClient, auth: dict[str, str], worker: WorkerProcess,
    unlisted_server: RecordingServer, target: str, reason: str,
) -> None:
    """Declaring an internal address is not enough: without the allowlist the call is refused
    before connecting, the message is dead, and the server sees no request."""
    message_id, _ = act(client, auth, target)
    record = wait_status(client, auth, message_id)
    assert record["status"] == "dead"
    assert record["error"]["type"] == "EgressRefused"
    assert reason in record["error"]["message"]
    assert "INTEGRATION_EGRESS_ALLOWLIST" in record["error"]["message"]
    assert unlisted_server.requests == []
    refused_breaker = breaker(client, auth, f"http:{target}")
    assert refused_breaker is None or refused_breaker["failures"] == 0  # not a downstream fault


def test_a_log_action_is_written_to_the_worker_log(
    client: FlaskClient, auth: dict[str, str], worker: WorkerProcess,
) -> None:
    """The log executor succeeds without a declaration and writes one structured line,
    secret-looking parameters masked."""
    action = f"announce-{uuid.uuid4().hex[:8]}"
    response = client.post("/api/v1/messages", headers=auth, json={
        "type": "action", "source": "executor-tests",
        "data": {"action": action, "target": "web", "executor": "log",
                 "parameters": {"replicas": 3, "api_token": "hunter2"}}})
    record = wait_status(client, auth, response.get_json()["id"])
    assert record["status"] == "succeeded" and record["result"]["executed"] is True

    def logged() -> dict[str, Any] | None:
        for line in worker.log_path.read_text(errors="replace").splitlines():
            if action in line and line.startswith("{"):
                entry: dict[str, Any] = json.loads(line)
                return entry
        return None

    entry = wait_for(logged, timeout=5, message="the action's log line")
    assert entry["event"] == "action" and entry["target"] == "web"
    assert entry["parameters"] == {"replicas": 3, "api_token": "[redacted]"}
