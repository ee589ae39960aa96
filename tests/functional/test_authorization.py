"""Authorization by role: what each token may submit and read, ownership, revocation."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
import redis
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from integration.app import get_settings
from integration.ops.cli import main as cli
from integration.ops.embedded_redis import free_port
from integration.security.tokens import issue_token, unverified_claims
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


@pytest.mark.parametrize("path", ["/api/v1/types", "/api/v1/messages", "/api/v1/breakers",
                                  "/api/v1/dead-letters", "/api/v1/schedules"])
def test_a_token_that_grants_nothing_is_403_everywhere(client: FlaskClient, path: str) -> None:
    """Unknown roles and no roles grant nothing: the same 403 on every route, the type
    listing included."""
    for headers in (bearer("nobody"), bearer("stranger", "root")):
        response = client.get(path, headers=headers)
        assert response.status_code == 403, path
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["permission"] == "any"
        assert "grant no permission" in response.get_json()["detail"]


def test_a_token_that_grants_nothing_submits_nothing(client: FlaskClient) -> None:
    """Deny by default: a submission with a token that grants nothing is 403 too."""
    response = client.post("/api/v1/messages", json=METRIC, headers=bearer("nobody"))
    assert response.status_code == 403
    assert response.get_json()["permission"] == "any"


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


def jti_less(subject: str, *roles: str, issued_at: float | None = None) -> dict[str, str]:
    """A bearer token without a jti, as many identity providers issue them."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": subject, "roles": list(roles), "exp": now + 600,
                               "iat": int(issued_at if issued_at is not None else now),
                               "type": "access"}
    return {"Authorization": "Bearer " + jwt.encode(payload, TEST_SECRET, algorithm="HS256")}


def test_revoking_a_subject_refuses_its_tokens_without_a_jti(client: FlaskClient,
                                                             auth: dict[str, str]) -> None:
    """An admin revokes a subject: its tokens issued before, with or without a jti, are 401;
    a token issued after the revocation works."""
    before = time.time() - 5
    old, old_with_jti = jti_less("erin", "reader", issued_at=before), bearer("erin", "reader")
    assert client.get("/api/v1/messages", headers=old).status_code == 200
    answer = client.post("/api/v1/tokens/revocations", headers=auth, json={"subject": "erin"})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["subject"] == "erin"
    for headers in (old, old_with_jti):
        refused = client.get("/api/v1/messages", headers=headers)
        assert refused.status_code == 401
        assert "revoked" in refused.get_json()["detail"]
    fresh = jti_less("erin", "reader", issued_at=time.time() + 2)
    assert client.get("/api/v1/messages", headers=fresh).status_code == 200


def test_revoking_a_subject_needs_manage_tokens_and_a_past_moment(client: FlaskClient,
                                                                  auth: dict[str, str]) -> None:
    """Without manage:tokens the revocation is 403; a moment in the future is 422."""
    forbidden = client.post("/api/v1/tokens/revocations", headers=bearer("f", "operator"),
                            json={"subject": "frank"})
    assert forbidden.status_code == 403
    assert forbidden.get_json()["permission"] == "manage:tokens"
    future = client.post("/api/v1/tokens/revocations", headers=auth,
                         json={"subject": "frank", "before": "2999-01-01T00:00:00Z"})
    assert future.status_code == 422
    assert future.get_json()["errors"][0]["loc"] == ["body", "before"]
    assert client.post("/api/v1/tokens/revocations", headers=auth,
                       json={}).status_code == 422


def test_an_earlier_subject_revocation_never_restores_tokens(app: Flask) -> None:
    """A subject's revocation moment only moves forward: revoking again with an earlier
    moment leaves the tokens issued in between refused."""
    revocations = app.extensions["integration"].revocations
    now = time.time()
    assert revocations.revoke_subject("gina", now) == pytest.approx(now)
    assert revocations.revoke_subject("gina", now - 3600) == pytest.approx(now)
    headers = jti_less("gina", "reader", issued_at=now - 60)
    assert app.test_client().get("/api/v1/messages", headers=headers).status_code == 401


def test_cli_revokes_a_token_without_a_jti_through_its_subject(client: FlaskClient) -> None:
    """`token revoke` of a jti-less token revokes its subject's tokens issued up to its iat;
    a later token of the subject still works."""
    issued = time.time() - 10
    headers = jti_less("hank", "reader", issued_at=issued)
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["token", "revoke", headers["Authorization"].split()[1]])
    assert result.exit_code == 0, result.output
    assert "no jti" in result.output and "'hank'" in result.output
    assert client.get("/api/v1/messages", headers=headers).status_code == 401
    later = jti_less("hank", "reader", issued_at=issued + 5)
    assert client.get("/api/v1/messages", headers=later).status_code == 200


def test_cli_revokes_a_subject_before_a_moment(client: FlaskClient) -> None:
    """`token revoke --subject S --before T` refuses S's tokens issued up to T only."""
    early = jti_less("ivy", "reader", issued_at=time.time() - 120)
    late = jti_less("ivy", "reader", issued_at=time.time() - 10)
    moment = datetime.fromtimestamp(time.time() - 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["token", "revoke", "--subject", "ivy",
                                      "--before", moment])
    assert result.exit_code == 0, result.output
    assert client.get("/api/v1/messages", headers=early).status_code == 401
    assert client.get("/api/v1/messages", headers=late).status_code == 200
    usage = CliRunner().invoke(cli, ["token", "revoke"])
    assert usage.exit_code == 2


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
