"""The API an operator (and the console) uses beyond messages: ``GET /me``, ``GET /queues``,
``POST /breakers/<name>/reset`` and ``POST /schedules/<name>/fire``, each with its
permission."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from integration.gateway.runtime import EXTENSION_KEY
from tests.conftest import bearer, purge_keys


def test_me_says_what_the_callers_roles_grant(client: FlaskClient) -> None:
    """Subject, roles, read scope, submit and subscribe patterns, and each managed
    resource with its scope."""
    operator = client.get("/api/v1/me", headers=bearer("on-call", "operator")).get_json()
    assert operator == {"subject": "on-call", "roles": ["operator"], "read": "any",
                        "submit": [], "subscribe": ["*"],
                        "manage": {"actions": "any", "breakers": "any",
                                   "dead_letters": "any", "schedules": "any"}}
    monitoring = client.get("/api/v1/me", headers=bearer("prom", "monitoring")).get_json()
    assert monitoring["read"] == "own" and monitoring["manage"] == {}
    assert client.get("/api/v1/me").status_code == 401


def test_queues_show_depths_and_the_live_workers(client: FlaskClient, auth: dict[str, str],
                                                 worker: Any) -> None:
    """Every type's queue with its depth and consumers; the session worker among the
    workers; a role without read scope ``any`` gets 403."""
    answer = client.get("/api/v1/queues", headers=auth)
    assert answer.status_code == 200
    queues = {q["name"]: q for q in answer.get_json()["queues"]}
    assert {"metric", "alert", "action"} <= set(queues)
    assert queues["metric"]["consumers"] >= 1 and queues["metric"]["depth"] >= 0
    workers = answer.get_json()["workers"]
    assert any("metric" in w["queues"] for w in workers)
    refused = client.get("/api/v1/queues", headers=bearer("prom", "monitoring"))
    assert refused.status_code == 403 and refused.get_json()["permission"] == "read:any"


def test_an_open_breaker_is_reset_by_a_manager_only(app: Flask, client: FlaskClient,
                                                    auth: dict[str, str]) -> None:
    """Reset closes an open breaker and forgets its failures; an unknown name is 404; a
    reader gets 403."""
    name = f"test:{uuid.uuid4().hex[:8]}"
    breaker = app.extensions[EXTENSION_KEY].guards.breaker(name)
    breaker.breaker.open()
    listed = client.get("/api/v1/breakers", headers=auth).get_json()["breakers"]
    assert next(b for b in listed if b["name"] == name)["state"] == "open"
    assert client.post(f"/api/v1/breakers/{name}/reset",
                       headers=bearer("r", "reader")).status_code == 403
    reset = client.post(f"/api/v1/breakers/{name}/reset", headers=auth)
    assert reset.status_code == 200
    assert reset.get_json()["state"] == "closed" and reset.get_json()["failures"] == 0
    assert client.post("/api/v1/breakers/test:nobody/reset", headers=auth).status_code == 404


@pytest.fixture
def clean_schedules(redis_client: redis.Redis) -> Iterator[None]:
    purge_keys(redis_client, "integration:beat:*")
    yield
    purge_keys(redis_client, "integration:beat:*")


def test_a_schedule_fires_now_as_its_creator(client: FlaskClient, auth: dict[str, str],
                                             clean_schedules: None) -> None:
    """Fire now sends the schedule's message at once (paused or not), through the submit
    path; someone else's or a missing schedule is 404, and a role without
    ``manage:schedules`` gets 403."""
    schedule = {"name": "hourly-check", "every": 3600, "type": "event",
                "data": {"kind": "check"}}
    assert client.post("/api/v1/schedules", headers=auth, json=schedule).status_code == 201
    assert client.post("/api/v1/schedules/hourly-check/pause", headers=auth).status_code == 200
    fired = client.post("/api/v1/schedules/hourly-check/fire", headers=auth)
    assert fired.status_code == 202, fired.get_json()
    body = fired.get_json()
    message = client.get(body["status_url"], headers=auth).get_json()
    assert message["type"] == "event" and message["channel"] == "beat"
    assert message["envelope"]["data"] == {"kind": "check"}
    assert client.post("/api/v1/schedules/nothing/fire", headers=auth).status_code == 404
    refused = client.post("/api/v1/schedules/hourly-check/fire", headers=bearer("r", "reader"))
    assert refused.status_code == 403


def test_a_sign_in_code_is_traded_for_its_token_once(client: FlaskClient, app: Flask) -> None:
    """``POST /console/sign-in``: the token once, then a 404 problem; a body without a code
    is a 422 problem."""
    links = app.extensions[EXTENSION_KEY].sign_in_links
    code = links.create("a-token")
    first = client.post("/console/sign-in", json={"code": code})
    assert first.status_code == 200 and first.get_json() == {"token": "a-token"}
    assert first.headers["Cache-Control"] == "no-store"
    again = client.post("/console/sign-in", json={"code": code})
    assert again.status_code == 404 and again.mimetype == "application/problem+json"
    assert "used already" in again.get_json()["detail"]
    for body in ({}, {"code": 7}, ["x"]):
        refused = client.post("/console/sign-in", json=body)
        assert refused.status_code == 422 and refused.mimetype == "application/problem+json"
    assert client.post("/console/sign-in", data="{", content_type="application/json"
                       ).status_code == 400
