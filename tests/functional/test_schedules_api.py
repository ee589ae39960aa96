"""``/api/v1/schedules`` and ``integration schedule``: permissions, validation, lifecycle."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from flask.testing import FlaskClient

from integration.ops.cli import main
from tests.conftest import bearer, purge_keys

NIGHTLY = {"name": "nightly", "crontab": "0 3 * * *", "type": "event",
           "data": {"kind": "nightly"}, "catch_up": "skip"}


@pytest.fixture(autouse=True)
def clean_schedules(redis_client: redis.Redis) -> Iterator[None]:
    """No schedule, due time or beat lock of another test is left."""
    purge_keys(redis_client, "integration:beat:*")
    yield
    purge_keys(redis_client, "integration:beat:*")



def problem(response: Any) -> dict[str, Any]:
    assert response.mimetype == "application/problem+json"
    return response.get_json()


def test_an_admin_manages_a_schedule_through_the_api(client: FlaskClient,
                                                     auth: dict[str, str]) -> None:
    """Create (201 with Location), list, show, pause, resume and delete."""
    created = client.post("/api/v1/schedules", headers=auth, json=NIGHTLY)
    assert created.status_code == 201
    body = created.get_json()
    assert body["crontab"] == "0 3 * * *" and body["origin"] == "api"
    assert body["source"] == "/integration/beat/nightly"
    assert body["next_run_at"].endswith("T03:00:00+00:00")
    names = [s["name"] for s in client.get("/api/v1/schedules", headers=auth).get_json()["items"]]
    assert names == ["nightly"]
    assert client.get(created.headers["Location"], headers=auth).get_json()["owner"] == "tester"
    paused = client.post("/api/v1/schedules/nightly/pause", headers=auth).get_json()
    assert paused["enabled"] is False and paused["next_run_at"] is None
    assert client.post("/api/v1/schedules/nightly/resume", headers=auth).get_json()["enabled"]
    assert client.delete("/api/v1/schedules/nightly", headers=auth).status_code == 204
    assert client.get("/api/v1/schedules", headers=auth).get_json()["items"] == []


def test_a_duplicate_name_is_a_conflict(client: FlaskClient, auth: dict[str, str]) -> None:
    """A second schedule with a taken name is refused with 409, the first one unchanged."""
    assert client.post("/api/v1/schedules", headers=auth, json=NIGHTLY).status_code == 201
    again = client.post("/api/v1/schedules", headers=auth, json={**NIGHTLY, "every": 5,
                                                                  "crontab": None})
    assert again.status_code == 409
    assert problem(again)["type"] == "/problems/conflict"
    shown = client.get("/api/v1/schedules/nightly", headers=auth).get_json()
    assert shown["crontab"] == "0 3 * * *"


@pytest.mark.parametrize(("body", "loc"), [
    ({**NIGHTLY, "name": "Bad Name"}, ["name"]),
    ({**NIGHTLY, "crontab": "61 * * * *"}, ["crontab"]),
    ({**NIGHTLY, "every": "5m"}, []),  # both timings
    ({**NIGHTLY, "crontab": None, "every": 0.5}, ["every"]),
    ({**NIGHTLY, "enabled": "yes"}, ["enabled"]),
    ({**NIGHTLY, "type": "no-such-type"}, ["type"]),
    ({**NIGHTLY, "type": "metric", "data": {"name": "cpu"}}, ["data", "value"]),
    ({**NIGHTLY, "catch_up": "always"}, ["catch_up"]),
    ({**NIGHTLY, "extra": 1}, ["extra"]),
])
def test_an_invalid_schedule_is_422_with_the_location(client: FlaskClient,
                                                      auth: dict[str, str], body: dict[str, Any],
                                                      loc: list[str]) -> None:
    """Every invalid field, and a message its type would refuse, is located in the problem."""
    response = client.post("/api/v1/schedules", headers=auth,
                           json={k: v for k, v in body.items() if v is not None})
    assert response.status_code == 422
    assert loc in [error["loc"] for error in problem(response)["errors"]]
    assert client.get("/api/v1/schedules", headers=auth).get_json()["items"] == []


def test_unknown_schedules_are_404(client: FlaskClient, auth: dict[str, str]) -> None:
    """Show, pause, resume and delete of a missing schedule answer 404 problems."""
    for method, path in (("get", ""), ("post", "/pause"), ("post", "/resume"),
                         ("delete", "")):
        response = getattr(client, method)(f"/api/v1/schedules/ghost{path}", headers=auth)
        assert response.status_code == 404
        assert problem(response)["type"] == "/problems/not-found"


def test_a_reader_may_not_manage_schedules(client: FlaskClient) -> None:
    """Without manage:schedules every route is 403, and nothing is created."""
    reader = bearer("dashboard", "reader")
    for method, path in (("get", ""), ("post", ""), ("get", "/x"), ("post", "/x/pause"),
                         ("delete", "/x")):
        response = getattr(client, method)(f"/api/v1/schedules{path}", headers=reader,
                                           json=NIGHTLY if method == "post" else None)
        assert response.status_code == 403
        assert problem(response)["permission"] == "manage:schedules"
    assert client.post("/api/v1/schedules", json=NIGHTLY).status_code == 401


def test_an_operator_schedules_only_types_it_may_submit(client: FlaskClient,
                                                        auth: dict[str, str]) -> None:
    """A schedule sends as its creator, so creating one also needs submit for its type;
    an operator still pauses, resumes and deletes any schedule."""
    operator = bearer("on-call", "operator")
    refused = client.post("/api/v1/schedules", headers=operator, json=NIGHTLY)
    assert refused.status_code == 403
    assert problem(refused)["permission"] == "submit:event"
    assert client.post("/api/v1/schedules", headers=auth, json=NIGHTLY).status_code == 201
    assert client.post("/api/v1/schedules/nightly/pause", headers=operator).status_code == 200
    assert client.delete("/api/v1/schedules/nightly", headers=operator).status_code == 204


def test_the_cli_manages_schedules_with_exit_codes() -> None:
    """``integration schedule``: 0 when done, 1 when refused (with the reason), 2 on misuse."""
    runner = CliRunner()
    created = runner.invoke(main, ["schedule", "create", "disk", "--every", "5m", "--type",
                                   "event", "--data", '{"kind": "disk"}', "--json"])
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["every"] == 300.0
    listed = runner.invoke(main, ["schedule", "list"])
    assert listed.exit_code == 0 and "disk" in listed.stdout and "every 300s" in listed.stdout
    shown = runner.invoke(main, ["schedule", "show", "disk", "--json"])
    assert json.loads(shown.stdout)["origin"] == "cli"
    assert runner.invoke(main, ["schedule", "pause", "disk"]).exit_code == 0
    assert not json.loads(runner.invoke(main, ["schedule", "show", "disk",
                                               "--json"]).stdout)["enabled"]
    assert runner.invoke(main, ["schedule", "resume", "disk"]).exit_code == 0

    duplicate = runner.invoke(main, ["schedule", "create", "disk", "--every", "1m",
                                     "--type", "event"])
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
    invalid = runner.invoke(main, ["schedule", "create", "cpu", "--every", "1m", "--type",
                                   "metric", "--data", '{"name": "cpu"}'])
    assert invalid.exit_code == 1 and "data.value: Field required" in invalid.output
    assert runner.invoke(main, ["schedule", "create", "x", "--type", "event"]).exit_code == 2
    assert runner.invoke(main, ["schedule", "create", "x", "--every", "1m", "--type", "event",
                                "--data", "{nope"]).exit_code == 2
    assert runner.invoke(main, ["schedule", "frobnicate"]).exit_code == 2

    assert runner.invoke(main, ["schedule", "delete", "disk"]).exit_code == 0
    missing = runner.invoke(main, ["schedule", "show", "disk"])
    assert missing.exit_code == 1 and "no schedule disk" in missing.output
    assert "Examples:" in runner.invoke(main, ["schedule", "--help"]).output
