"""Flower (``integration flower``), behind its login on every page, /metrics included, sees the
workers and the tasks that processed messages."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from flask.testing import FlaskClient

from integration.ops.embedded_redis import free_port
from tests.conftest import ROOT, wait_for, wait_status

CREDENTIALS = "operator:" + secrets.token_urlsafe(48)


def get(url: str, auth: str | None = CREDENTIALS, as_json: bool = True) -> tuple[int, Any]:
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} \
        if auth else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),  # noqa: S310
                                    timeout=5) as response:
            body = response.read()
            return int(response.status), json.loads(body or b"null") if as_json else body
    except urllib.error.HTTPError as exc:
        return int(exc.code), None
    except OSError:
        return 0, None


@pytest.fixture(scope="module")
def flower(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `integration flower` for the module's tests."""
    port = free_port()
    log = tmp_path_factory.mktemp("flower") / "flower.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "integration", "flower", f"--port={port}",
         "--address=127.0.0.1", f"--basic-auth={CREDENTIALS}"],
        cwd=ROOT, env=dict(os.environ), stdout=log.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get(base + "/api/workers")[0] == 200, timeout=30, message="flower up")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)
        # Flower turned the workers' task events on; leave the session's worker as it was.
        monitor = Celery(broker=redis_url)
        monitor.control.disable_events()
        monitor.close()


def test_flower_sees_the_worker_and_a_processed_message(
    flower: str, client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    assert get(flower + "/api/workers", auth=None)[0] == 401, "no access without credentials"
    assert get(flower + "/api/workers", auth="operator:wrong")[0] == 401
    workers = wait_for(lambda: get(flower + "/api/workers?refresh=1")[1],
                       message="flower lists the worker")
    assert any(name.startswith("test-") for name in workers)

    # Workers send task events once a monitor asks; Flower asks every few seconds (5 s by
    # default), so a message processed before its first request is not shown.
    def seen() -> dict[str, Any] | None:
        message_id = client.post("/api/v1/messages", headers=auth, json={
            "type": "event", "source": "flower",
            "data": {"password": "hunter2"}}).get_json()["id"]
        wait_status(client, auth, message_id)
        # Flower learns of the task from its events, which may trail the status record.
        try:
            return wait_for(lambda: (info := get(f"{flower}/api/task/info/{message_id}")[1])
                            and info.get("state") == "SUCCESS" and info, timeout=2,
                            message="flower saw the task succeed")
        except AssertionError:
            return None

    task = wait_for(seen, timeout=30, message="flower enabled events and saw a task succeed")
    message_id = task["uuid"]
    assert task["name"] == "integration.process[event]"  # the shadow name shows the type
    assert message_id in task["args"] and "hunter2" not in json.dumps(task), \
        "arguments shown by their ids, never the data"

    # The same states as the status API: dead is FAILURE with its error, a parked retry RETRY.
    def flower_state(body: dict[str, Any], state: str) -> dict[str, Any]:
        message_id = client.post("/api/v1/messages", headers=auth, json=body).get_json()["id"]
        return wait_for(lambda: (info := get(f"{flower}/api/task/info/{message_id}")[1])
                        and info.get("state") == state and info, timeout=20,
                        message=f"flower shows {message_id} {state}")

    failed = flower_state({"type": "test.flaky", "source": "flower", "data": {
        "key": uuid.uuid4().hex, "fail_times": 1, "kind": "permanent"}}, "FAILURE")
    assert "dead" in failed["exception"] and "PermanentError" in failed["exception"]
    assert failed["name"] == "integration.process[test.flaky]"
    flower_state({"type": "test.patient", "source": "flower", "data": {
        "key": uuid.uuid4().hex, "fail_times": 1}}, "RETRY")


def test_flower_metrics_need_the_login(flower: str) -> None:
    """/metrics answers 401 without the login or with a wrong one, and the metrics with it;
    the health check stays open for probes."""
    assert get(flower + "/metrics", auth=None, as_json=False)[0] == 401
    assert get(flower + "/metrics", auth="operator:wrong", as_json=False)[0] == 401
    status, body = get(flower + "/metrics", as_json=False)
    assert status == 200 and b"flower_" in body
    assert get(flower + "/healthcheck", auth=None, as_json=False)[0] == 200


@pytest.mark.parametrize("env, login, expected", [
    ("development", None, "Flower needs a login"),
    ("production", "admin:replace-with-openssl-rand-base64-48", "is a placeholder"),
    ("production", "admin:hunter2hunter2hunter2", "bits of entropy"),
])
def test_flower_refuses_to_start_without_a_good_login(env: str, login: str | None,
                                                     expected: str) -> None:
    """No login at all, or in production a placeholder or low-entropy password: Flower does
    not start, and the message says how to generate a password."""
    from click.testing import CliRunner

    from integration.app import get_settings
    from integration.ops.cli import main
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["flower", "--port=1"], env={
            "INTEGRATION_ENV": env, "FLOWER_BASIC_AUTH": login})
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert expected in result.output and "openssl rand -base64 48" in result.output
