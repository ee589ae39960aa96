"""Dead letters: kept with every attempt's error, replayed once as a new generation, purged."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from integration.ops.cli import main as cli
from integration.security.tokens import issue_token
from tests.conftest import ROOT, TEST_SECRET, wait_for, wait_status
from tests.support.fault_types import DUPLICATES, LEDGER


def poison(client: FlaskClient, auth: dict[str, str], fail_times: int = 3) -> tuple[str, str]:
    """A message that fails its 3 attempts (then would succeed: 'the fix')."""
    effect = uuid.uuid4().hex[:10]
    response = client.post("/api/v1/messages", headers=auth, json={
        "type": "test.flaky", "source": "dlq", "data": {"key": effect, "fail_times": fail_times}})
    message_id = response.get_json()["id"]
    assert wait_status(client, auth, message_id)["status"] == "dead"
    return message_id, effect


def test_a_dead_letter_is_kept_replayed_once_and_succeeds_once(
    client: FlaskClient, auth: dict[str, str], worker: Any, redis_client: redis.Redis
) -> None:
    message_id, effect = poison(client, auth)
    listed = client.get("/api/v1/dead-letters", query_string={"type": "test.flaky"},
                        headers=auth).get_json()
    assert message_id in [item["id"] for item in listed["items"]]
    letter = client.get(f"/api/v1/dead-letters/{message_id}", headers=auth).get_json()
    assert letter["envelope"]["data"]["key"] == effect
    assert letter["delivered_queue"] == "test.flaky"
    assert [e["attempt"] for e in letter["attempt_errors"]] == [1, 2, 3]
    assert all(e["type"] == "TransientError" and e["message"] and "traceback" not in e
               for e in letter["attempt_errors"])

    first = client.post(f"/api/v1/dead-letters/{message_id}/replay", headers=auth)
    second = client.post(f"/api/v1/dead-letters/{message_id}/replay", headers=auth)
    assert first.status_code == 202 and first.get_json()["generation"] == 2
    assert second.status_code == 409, "a second replay enqueues nothing"

    record = wait_status(client, auth, message_id)
    assert record["status"] == "succeeded" and record["generation"] == 2
    assert record["attempts"] == 1
    assert "replayed_by" in str(record["history"])
    assert redis_client.sismember(LEDGER, effect)
    assert effect.encode() not in redis_client.lrange(DUPLICATES, 0, -1)
    assert client.get(f"/api/v1/dead-letters/{message_id}", headers=auth).status_code == 404


def test_bulk_replay_by_type_and_delete(client: FlaskClient, auth: dict[str, str],
                                        worker: Any) -> None:
    ids = [poison(client, auth, fail_times=3)[0] for _ in range(2)]
    doomed, _ = poison(client, auth, fail_times=99)
    assert client.delete(f"/api/v1/dead-letters/{doomed}", headers=auth).status_code == 204
    assert client.get(f"/api/v1/messages/{doomed}", headers=auth).status_code == 404
    assert client.delete(f"/api/v1/dead-letters/{doomed}", headers=auth).status_code == 404

    response = client.post("/api/v1/dead-letters/replay", json={"type": "test.flaky"},
                           headers=auth)
    assert response.status_code == 202
    assert set(ids) <= set(response.get_json()["ids"])
    for message_id in ids:
        assert wait_status(client, auth, message_id)["status"] == "succeeded"


@pytest.fixture
def tenant(make_app: Callable[..., Flask]) -> tuple[FlaskClient, dict[str, str]]:
    """A gateway with the tenants' policy and a tenant that manages only its own dead
    letters, so replaying "all" leaves the other tests' dead letters alone."""
    client = make_app(policy_file=str(ROOT / "tests" / "support" / "tenant_policy.yaml"))
    token = issue_token(TEST_SECRET, f"tenant-{uuid.uuid4().hex[:8]}", ["tenant"])
    return client.test_client(), {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("body", [None, {"limit": 5}, {"all": True, "type": "test.flaky"}])
def test_a_bulk_replay_needs_a_filter_or_all(tenant: tuple[FlaskClient, dict[str, str]],
                                             worker: Any, body: Any) -> None:
    """A body-less bulk replay (or one with neither a filter nor "all": true, or both) is a
    422 and replays nothing."""
    client, headers = tenant
    message_id, _ = poison(client, headers, fail_times=3)
    response = client.post("/api/v1/dead-letters/replay", headers=headers,
                           **({"json": body} if body is not None else {}))
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["loc"] == ["body"]
    assert client.get(f"/api/v1/messages/{message_id}", headers=headers).get_json()[
        "status"] == "dead"


@pytest.mark.parametrize("body", [{"all": True, "limit": True}, {"all": "yes"},
                                  {"type": "test.flaky", "limit": "5"}])
def test_a_replay_body_of_the_wrong_json_types_is_refused(
        tenant: tuple[FlaskClient, dict[str, str]], body: Any) -> None:
    """The body's JSON types are the document's: true is no number, "yes" no boolean."""
    client, headers = tenant
    response = client.post("/api/v1/dead-letters/replay", headers=headers, json=body)
    assert response.status_code == 422


def test_all_true_replays_every_dead_letter(tenant: tuple[FlaskClient, dict[str, str]],
                                            worker: Any) -> None:
    """"all": true is the explicit way to replay every dead letter (the caller's own,
    with scope own)."""
    client, headers = tenant
    message_id, _ = poison(client, headers, fail_times=3)
    response = client.post("/api/v1/dead-letters/replay", headers=headers, json={"all": True})
    assert response.status_code == 202
    assert response.get_json()["ids"] == [message_id]
    assert wait_status(client, headers, message_id)["status"] == "succeeded"


def test_dead_letters_need_the_permission(client: FlaskClient) -> None:
    headers = {"Authorization": "Bearer " + issue_token(TEST_SECRET, "m", ["monitoring"])}
    response = client.get("/api/v1/dead-letters", headers=headers)
    assert response.status_code == 403
    assert response.get_json()["permission"] == "manage:dead_letters"
    operator = {"Authorization": "Bearer " + issue_token(TEST_SECRET, "o", ["operator"])}
    assert client.get("/api/v1/dead-letters", headers=operator).status_code == 200


def test_the_cli_lists_shows_replays_and_purges(client: FlaskClient, auth: dict[str, str],
                                                worker: Any) -> None:
    replayable, _ = poison(client, auth, fail_times=3)
    runner = CliRunner()
    listed = runner.invoke(cli, ["dlq", "list", "--type", "test.flaky"])
    assert listed.exit_code == 0 and replayable in listed.output
    shown = runner.invoke(cli, ["dlq", "show", replayable])
    assert shown.exit_code == 0 and "TransientError" in shown.output
    replayed = runner.invoke(cli, ["dlq", "replay", "--type", "test.flaky"])
    assert replayed.exit_code == 0, replayed.output
    assert wait_status(client, auth, replayable)["status"] == "succeeded"

    purged_id, _ = poison(client, auth, fail_times=99)
    purged = runner.invoke(cli, ["dlq", "purge", "--type", "test.flaky", "--yes"])
    assert purged.exit_code == 0 and "purged" in purged.output
    wait_for(lambda: client.get(f"/api/v1/messages/{purged_id}", headers=auth).status_code
             == 404, message="purged letter gone")
