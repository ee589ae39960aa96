"""Answers carry an error's class and text; tracebacks, file paths and DNS answers stay in logs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import redis
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import ROOT, wait_status

#: What an answer must never hold: where the code is installed, and Python's traceback.
INSTALLED = str(ROOT)


def dead_buggy_message(client: FlaskClient, auth: dict[str, str]) -> str:
    """A message whose handler fails on a missing file until it ends dead."""
    response = client.post("/api/v1/messages", headers=auth, json={
        "type": "test.buggy", "source": "leaks", "data": {"key": uuid.uuid4().hex}})
    assert response.status_code == 202
    message_id = str(response.get_json()["id"])
    assert wait_status(client, auth, message_id)["status"] == "dead"
    return message_id


def test_a_dead_message_answers_with_the_error_class_and_message_only(
        client: FlaskClient, auth: dict[str, str], worker: Any) -> None:
    """The status, trace and dead letter of a failed message name the error's class and its
    text with file paths left out; no traceback and no installation path anywhere."""
    message_id = dead_buggy_message(client, auth)
    record = client.get(f"/api/v1/messages/{message_id}", headers=auth).get_json()
    assert record["error"]["type"] == "FileNotFoundError"
    assert "No such file or directory: '[path]'" in record["error"]["message"]
    answers = [record,
               client.get(f"/api/v1/messages/{message_id}/trace", headers=auth).get_json(),
               client.get(f"/api/v1/dead-letters/{message_id}", headers=auth).get_json(),
               client.get("/api/v1/dead-letters", headers=auth,
                          query_string={"type": "test.buggy"}).get_json()]
    for answer in answers:
        text = json.dumps(answer)
        assert "traceback" not in text.lower() and INSTALLED not in text, text[:500]
    worker_log = worker.log_path.read_text(errors="replace")
    assert f"message {message_id} attempt 2 failed: FileNotFoundError" in worker_log
    assert "Traceback" in worker_log, "the traceback is in the worker's log"


def test_a_traceback_stored_by_an_earlier_version_is_not_answered(
        client: FlaskClient, auth: dict[str, str], worker: Any,
        redis_client: redis.Redis) -> None:
    """Records written before this version kept a traceback in their error: the API
    leaves it out."""
    message_id = dead_buggy_message(client, auth)
    key = f"integration:msg:{message_id}"
    error = json.loads(redis_client.hget(key, "error") or b"{}")
    redis_client.hset(key, "error", json.dumps({**error, "traceback": "Traceback (most…"}))
    shown = client.get(f"/api/v1/dead-letters/{message_id}", headers=auth).get_json()
    assert shown["error"]["type"] == "FileNotFoundError"
    assert "traceback" not in shown["error"]


def test_a_refused_webhook_url_does_not_say_what_its_host_resolves_to(
        make_app: Callable[..., Flask], auth: dict[str, str]) -> None:
    """A subscription to a name that resolves inside the network is refused with 422; the
    answer does not say the address nor its kind."""
    client = make_app(egress_allowlist="").test_client()
    response = client.post("/api/v1/subscriptions", headers=auth, json={
        "url": "http://localhost:9/hook", "topics": ["alert.*"]})
    assert response.status_code == 422
    text = json.dumps(response.get_json())
    assert "may not be called" in text
    assert "127.0.0.1" not in text and "loopback" not in text
