"""Authorization by role: what each token may submit and read, ownership, revocation."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from integration.cli import main as cli
from integration.embedded_redis import free_port
from integration.settings import get_settings
from integration.tokens import issue_token, unverified_claims
from tests.conftest import TEST_SECRET

METRIC = {"type": "metric", "source": "authz", "data": {"name": "cpu", "value": 1.0}}
ACTION = {"type": "action", "source": "authz", "data": {"action": "restart", "target": "x"}}


def bearer(subject: str, *roles: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(TEST_SECRET, subject, roles, 600,
                                                     **claims)}


@pytest.fixture
def recorded(redis_client: redis.Redis) -> Callable[[], int]:
    """How many action messages were ever recorded (every enqueued message is recorded first;
    the metric's own loop records messages of other types meanwhile)."""
    return lambda: int(redis_client.zcard("integration:idx:type:action"))


def test_a_role_submits_only_its_types(client: FlaskClient,
                                       recorded: Callable[[], int]) -> None:
    """monitoring may send metrics but not actions: 403 naming the permission, nothing queued."""
    headers = bearer("prometheus", "monitoring")
    assert client.post("/api/v1/messages", json=METRIC, headers=headers).status_code == 202
    before = recorded()
    response = client.post("/api/v1/messages", json=ACTION, headers=headers)
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["permission"] == "submit:action"
    assert recorded() == before


def test_forbidden_items_of_a_batch_are_403_each(client: FlaskClient) -> None:
    """Each item is judged by its own type (the answers per type are remembered)."""
    body = client.post("/api/v1/messages", json=[METRIC, ACTION, METRIC, ACTION],
                       headers=bearer("prometheus", "monitoring")).get_json()
    assert [r["status"] for r in body["results"]] == [202, 403, 202, 403]
    assert body["results"][1]["problem"]["permission"] == "submit:action"
    assert body["results"][3]["problem"]["permission"] == "submit:action"


def test_unknown_roles_and_no_roles_grant_nothing(client: FlaskClient) -> None:
    """Deny by default."""
    for headers in (bearer("nobody"), bearer("stranger", "root")):
        assert client.post("/api/v1/messages", json=METRIC, headers=headers).status_code == 403
        response = client.get("/api/v1/messages", headers=headers)
        assert response.status_code == 403
        assert response.get_json()["permission"] == "read:messages"


def test_owners_read_only_their_messages(client: FlaskClient) -> None:
    """Another owner's message answers 404, exactly like an unknown id; admin sees all."""
    alice, bob = bearer("alice", "monitoring"), bearer("bob", "monitoring")
    message_id = client.post("/api/v1/messages", json=METRIC, headers=alice).get_json()["id"]
    assert client.get(f"/api/v1/messages/{message_id}", headers=alice).status_code == 200
    hidden = client.get(f"/api/v1/messages/{message_id}", headers=bob)
    missing = client.get("/api/v1/messages/no-such-message", headers=bob)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.get_json() == missing.get_json()

    listed = lambda headers: {i["id"] for i in client.get(  # noqa: E731
        "/api/v1/messages", query_string={"limit": 100}, headers=headers).get_json()["items"]}
    assert message_id in listed(alice)
    assert message_id not in listed(bob)
    assert message_id in listed(bearer("auditor", "reader"))


@pytest.mark.parametrize("attribute", ["owner", "channel", "status", "roles"])
def test_identity_cannot_come_from_the_body(client: FlaskClient, attribute: str) -> None:
    """Mass assignment of service-controlled attributes is a 422."""
    response = client.post("/api/v1/messages", json={**METRIC, attribute: "mallory"},
                           headers=bearer("alice", "monitoring"))
    assert response.status_code == 422
    assert "from your token" in response.get_json()["errors"][0]["msg"]


def test_revoked_token_is_refused_everywhere(client: FlaskClient, auth: dict[str, str]) -> None:
    """An admin revokes a token by jti; from then on it is 401."""
    headers = bearer("alice", "monitoring")
    jti = unverified_claims(headers["Authorization"].split()[1])["jti"]
    assert client.post("/api/v1/messages", json=METRIC, headers=headers).status_code == 202
    forbidden = client.delete(f"/api/v1/tokens/{jti}", headers=headers)
    assert forbidden.status_code == 403
    assert forbidden.get_json()["permission"] == "manage:tokens"
    assert client.delete(f"/api/v1/tokens/{jti}", headers=auth).status_code == 204
    response = client.post("/api/v1/messages", json=METRIC, headers=headers)
    assert response.status_code == 401
    assert "revoked" in response.get_json()["detail"]


def test_cli_revokes_a_token_given_its_text(client: FlaskClient) -> None:
    headers = bearer("bob", "monitoring")
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["token", "revoke", headers["Authorization"].split()[1]])
    assert result.exit_code == 0, result.output
    assert client.get("/api/v1/messages", headers=headers).status_code == 401


def test_unreadable_revocation_list_fails_closed(app: Flask) -> None:
    """If revocation cannot be checked, the token is not trusted: 503, not 200."""
    runtime_ = app.extensions["integration"]
    runtime_.revocations.client = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    response = app.test_client().get("/api/v1/messages", headers=bearer("a", "reader"))
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    # The answer names what cannot be reached, not only what could not be done.
    assert response.get_json()["unreachable"] == "store"
    assert "status store (Redis) is unreachable" in response.get_json()["detail"]



def test_a_revocation_from_another_process_applies_within_the_check_interval(
        make_app: Callable[..., Flask], redis_client: redis.Redis) -> None:
    """A gateway process trusts a "not revoked" answer for the check interval only: a token
    revoked elsewhere (the CLI, another gateway process) is refused once it has passed."""
    app = make_app(revocation_check_interval_seconds=0.5)
    headers = bearer("carol", "reader")
    client = app.test_client()
    assert client.get("/api/v1/messages", headers=headers).status_code == 200
    other_process = make_app().extensions["integration"].revocations
    other_process.revoke(unverified_claims(headers["Authorization"].split()[1])["jti"])
    time.sleep(0.6)
    response = client.get("/api/v1/messages", headers=headers)
    assert response.status_code == 401
    assert "revoked" in response.get_json()["detail"]


def test_without_a_check_interval_every_request_asks_redis(
        make_app: Callable[..., Flask]) -> None:
    app = make_app(revocation_check_interval_seconds=0)
    headers = bearer("dave", "reader")
    client = app.test_client()
    assert client.get("/api/v1/messages", headers=headers).status_code == 200
    make_app().extensions["integration"].revocations.revoke(
        unverified_claims(headers["Authorization"].split()[1])["jti"])
    assert client.get("/api/v1/messages", headers=headers).status_code == 401
