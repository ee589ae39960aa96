"""Tenants sharing one deployment: nobody reaches another's messages, dead letters,
subscriptions, schedules or held actions, learns whether an id is used, grafts onto another's
chain, or has the service sign or fire something beyond its rights (a Redis of the module's
own, a real worker, a real beat, the real gateway)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from flask.testing import FlaskClient

from integration.app import default_registry
from integration.messages.ownership import scoped
from integration.messages.routing import DEFAULT_QUEUE, PROCESS_TASK
from integration.messages.status import Status
from integration.ops.embedded_redis import EmbeddedRedis
from integration.security.revocations import Revocations
from integration.security.tokens import issue_token
from integration.store.records import store_from_settings
from tests.conftest import ROOT, TEST_SECRET, WorkerProcess, configured, wait_for, wait_status
from tests.functional.test_schedules import BeatProcess, schedule_file
from tests.support.http_target import RecordingServer

POLICY = ROOT / "tests" / "support" / "tenant_policy.yaml"
MISSING = {"title", "status", "detail", "type"}


#: The module's tokens are issued when it is imported, at collection: they must outlive the
#: whole session, whatever runs before this module.
SESSION_TTL = 6 * 3600


def bearer(subject: str, *roles: str) -> dict[str, str]:
    token = issue_token(TEST_SECRET, subject, list(roles), SESSION_TTL)
    return {"Authorization": f"Bearer {token}"}


ALICE, BOB = bearer("alice", "tenant"), bearer("bob", "tenant")
AUDITOR, CAROL = bearer("auditor", "auditor"), bearer("carol", "listener")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedRedis, Path]]:
    """A Redis and a worker of the module's own, on the tenants' policy."""
    directory = tmp_path_factory.mktemp("tenants")
    with EmbeddedRedis(directory / "redis", persistent=False) as server:
        queues = [*default_registry().queues(), DEFAULT_QUEUE]
        worker = WorkerProcess(queues, directory / "worker.log", env={
            "INTEGRATION_REDIS_URL": server.url, "INTEGRATION_POLICY_FILE": str(POLICY)})
        try:
            yield server, directory
        finally:
            worker.stop()


@pytest.fixture
def api(make_app: Any, stack: tuple[EmbeddedRedis, Path]) -> FlaskClient:
    app = make_app(redis_url=stack[0].url, policy_file=str(POLICY))
    return app.test_client()


def submit(api: FlaskClient, who: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"type": "event", "source": "tenants", "data": {}, **fields}
    response = api.post("/api/v1/messages", headers=who, json=body)
    assert response.status_code == 202, response.get_json()
    return dict(response.get_json())


def missing(response: Any) -> dict[str, Any]:
    """A 404 problem document, without its instance (the path asked for)."""
    assert response.status_code == 404, response.get_json()
    return {k: v for k, v in response.get_json().items() if k in MISSING}


def test_internal_types_are_closed_to_every_role(api: FlaskClient) -> None:
    """Deliveries are the service's own: no role submits one, ``*`` included."""
    for kind in ("webhook", "consumer.loop-recording"):
        response = api.post("/api/v1/messages", headers=AUDITOR, json={
            "type": kind, "source": "x", "data": {"subscription": "s", "host": "h",
                                                  "topic": "t", "event": {}}})
        assert response.status_code == 403 and response.get_json()["permission"] == \
            f"submit:{kind}"
    listed = {t["name"]: t for t in api.get("/api/v1/types", headers=AUDITOR).get_json()
              ["types"]}
    assert listed["webhook"]["internal"] is True and listed["event"]["internal"] is False


def test_a_direct_caller_cannot_make_the_worker_sign_or_replace_a_delivery(
        api: FlaskClient, stack: tuple[EmbeddedRedis, Path]) -> None:
    """A webhook envelope sent straight to the broker is refused; so is one that reuses the
    id of a real delivery with another body. Only the service's own delivery is signed."""
    with RecordingServer() as receiver:
        created = api.post("/api/v1/subscriptions", headers=ALICE, json={
            "url": receiver.url("/hook"), "topics": ["test.produce.succeeded"]})
        assert created.status_code == 201
        webhook = created.get_json()
        message = submit(api, ALICE, type="test.produce", data={"key": uuid.uuid4().hex})
        wait_for(lambda: receiver.seen("/hook"), message="the real delivery")
        trace = api.get(f"/api/v1/messages/{message['id']}/trace", headers=ALICE).get_json()
        [real] = [c["id"] for c in trace["caused"] if c["type"] == "webhook"]

        celery = Celery("forger", broker=stack[0].url, set_as_current=False)
        forged_event = {"type": "event.succeeded", "data": {"forged": True}}
        for message_id in ("forged-1", real):
            celery.send_task(PROCESS_TASK, queue="webhook", args=[{
                "id": message_id, "type": "webhook", "source": "forger", "specversion": "1.0",
                "data": {"subscription": webhook["id"], "host": "127.0.0.1", "topic": "x",
                         "event": forged_event}}])
        time.sleep(2)
        assert len(receiver.seen("/hook")) == 1, "nothing forged was delivered"
        assert b"forged" not in receiver.seen("/hook")[0].body
        assert api.get("/api/v1/messages/forged-1", headers=AUDITOR).status_code == 404
        api.delete(f"/api/v1/subscriptions/{webhook['id']}", headers=ALICE)


def test_subscriptions_belong_to_their_creator(api: FlaskClient) -> None:
    """Another tenant cannot list, read, enable or delete one (404 like a missing one); an
    auditor with ``subscriptions:any`` can."""
    created = api.post("/api/v1/subscriptions", headers=ALICE, json={
        "url": "http://127.0.0.1:9/hook?token=alice-secret", "topics": ["test.*"]})
    assert created.status_code == 201
    webhook = created.get_json()["id"]
    assert webhook not in {w["id"] for w in api.get("/api/v1/subscriptions", headers=BOB)
                           .get_json()["items"]}
    nowhere = missing(api.get("/api/v1/subscriptions/no-such-id", headers=BOB))
    assert missing(api.get(f"/api/v1/subscriptions/{webhook}", headers=BOB)) == nowhere
    assert missing(api.post(f"/api/v1/subscriptions/{webhook}/enable", headers=BOB)) == \
        missing(api.post("/api/v1/subscriptions/no-such-id/enable", headers=BOB))
    assert missing(api.delete(f"/api/v1/subscriptions/{webhook}", headers=BOB)) == \
        missing(api.delete("/api/v1/subscriptions/no-such-id", headers=BOB))
    assert webhook in {w["id"] for w in api.get("/api/v1/subscriptions", headers=AUDITOR)
                       .get_json()["items"]}
    assert api.delete(f"/api/v1/subscriptions/{webhook}", headers=ALICE).status_code == 204


def test_schedules_belong_to_their_creator_and_names_do_not_collide(
        api: FlaskClient) -> None:
    """Two tenants each have a schedule named ``nightly``; neither sees nor touches the
    other's."""
    spec = {"name": "nightly", "every": 3600, "type": "event", "data": {}}
    assert api.post("/api/v1/schedules", headers=ALICE, json=spec).status_code == 201
    assert api.post("/api/v1/schedules", headers=BOB, json=spec).status_code == 201
    assert api.post("/api/v1/schedules", headers=BOB, json=spec).status_code == 409
    mine = api.get("/api/v1/schedules", headers=BOB).get_json()["items"]
    assert [(s["name"], s["owner"]) for s in mine] == [("nightly", "bob")]
    alices = api.get("/api/v1/schedules/nightly", headers=ALICE).get_json()
    assert alices["owner"] == "alice"
    nowhere = missing(api.get("/api/v1/schedules/no-such", headers=BOB))
    for path in (f"/api/v1/schedules/{alices['id']}",):
        assert missing(api.get(path, headers=BOB)) == nowhere
        assert missing(api.post(f"{path}/pause", headers=BOB)).keys() == nowhere.keys()
        assert missing(api.delete(path, headers=BOB)).keys() == nowhere.keys()
    everyone = api.get("/api/v1/schedules", headers=AUDITOR).get_json()["items"]
    assert {("nightly", "alice"), ("nightly", "bob")} <= {(s["name"], s["owner"])
                                                          for s in everyone}
    for who in (ALICE, BOB):
        assert api.delete("/api/v1/schedules/nightly", headers=who).status_code == 204


def test_message_ids_reveal_nothing_and_stay_with_their_owner(api: FlaskClient) -> None:
    """Bob submitting Alice's id gets his own message (202, not 409); each reads its own by
    that id; neither reads the other's by any id."""
    given = f"order-{uuid.uuid4().hex[:6]}"
    alices = submit(api, ALICE, id=given)
    bobs = submit(api, BOB, id=given)
    assert alices["id"] != bobs["id"]
    assert alices["id"] == scoped("alice", given)
    assert api.post("/api/v1/messages", headers=BOB, json={
        "id": given, "type": "event", "source": "t", "data": {}}).status_code == 409
    assert api.get(f"/api/v1/messages/{given}", headers=ALICE).get_json()["id"] == alices["id"]
    assert api.get(f"/api/v1/messages/{given}", headers=BOB).get_json()["id"] == bobs["id"]
    nowhere = missing(api.get("/api/v1/messages/never-submitted", headers=BOB))
    assert missing(api.get(f"/api/v1/messages/{alices['id']}", headers=BOB)) == nowhere
    assert missing(api.get(f"/api/v1/messages/{alices['id']}/trace", headers=BOB)) == \
        missing(api.get("/api/v1/messages/never-submitted/trace", headers=BOB))


def test_links_stay_within_the_senders_rights(api: FlaskClient) -> None:
    """Naming another's message as a cause grafts nothing onto its trace, and answers as an
    unknown id does; a message one may receive (a subscribed topic) may be named; a trace
    shows only what its reader may read."""
    alices = submit(api, ALICE)
    wait_status(api, ALICE, alices["id"])
    grafted = submit(api, BOB, causationid=alices["id"], correlationid=alices["id"])
    unknown = submit(api, BOB, causationid="never-submitted")
    record = api.get(f"/api/v1/messages/{grafted['id']}", headers=BOB).get_json()
    assert record["envelope"]["causationid"] == scoped("bob", alices["id"])
    assert unknown["status"] == grafted["status"] == "queued"
    # Carol receives event.* and may name Alice's event as the cause of hers.
    linked = submit(api, CAROL, causationid=alices["id"])
    for message in (grafted, linked):
        wait_status(api, AUDITOR, message["id"])
    seen_by = {who: {c["id"] for c in api.get(f"/api/v1/messages/{alices['id']}/trace",
                                              headers=headers).get_json()["caused"]}
               for who, headers in (("alice", ALICE), ("auditor", AUDITOR))}
    assert grafted["id"] not in seen_by["auditor"], "no graft"
    assert linked["id"] in seen_by["auditor"]
    assert linked["id"] not in seen_by["alice"], "alice may not read carol's message"


def test_dead_letters_and_held_actions_belong_to_their_owner(
        api: FlaskClient, stack: tuple[EmbeddedRedis, Path], settings: Any) -> None:
    """Bob neither sees, replays nor deletes Alice's dead letter, nor releases her held
    action; a bulk replay by Bob touches only his; the auditor sees hers."""
    dead = submit(api, ALICE, type="test.flaky",
                  data={"key": uuid.uuid4().hex, "fail_times": 1, "kind": "permanent"})
    assert wait_status(api, ALICE, dead["id"])["status"] == "dead"
    listed = api.get("/api/v1/dead-letters", headers=BOB).get_json()["items"]
    assert dead["id"] not in {i["id"] for i in listed}
    nowhere = missing(api.get("/api/v1/dead-letters/no-such", headers=BOB))
    assert missing(api.get(f"/api/v1/dead-letters/{dead['id']}", headers=BOB)) == nowhere
    assert missing(api.post(f"/api/v1/dead-letters/{dead['id']}/replay", headers=BOB))
    assert missing(api.delete(f"/api/v1/dead-letters/{dead['id']}", headers=BOB))
    replayed = api.post("/api/v1/dead-letters/replay", headers=BOB,
                        json={"type": "test.flaky"})
    assert dead["id"] not in replayed.get_json().get("ids", [])
    assert dead["id"] in {i["id"] for i in api.get("/api/v1/dead-letters", headers=AUDITOR)
                          .get_json()["items"]}

    store = store_from_settings(configured(settings, redis_url=stack[0].url))
    store.transition(dead["id"], Status.HELD)  # as loop detection would hold an action
    assert missing(api.post(f"/api/v1/messages/{dead['id']}/release", headers=BOB))
    assert missing(api.post(f"/api/v1/messages/{dead['id']}/drop", headers=BOB))
    assert api.post(f"/api/v1/messages/{dead['id']}/drop", headers=ALICE).status_code == 200


def test_firings_and_deliveries_stop_when_their_creator_loses_the_right(
        make_app: Any, tmp_path: Path) -> None:
    """A schedule and a subscription act with their creator's rights as they are at each
    firing and delivery: a policy that takes the right away, or a revocation of the
    subject, refuses them, and says so on the schedule and the subscription."""
    narrowed = tmp_path / "narrowed.yaml"
    narrowed.write_text(POLICY.read_text().replace(
        "  quiet:               # may submit events now; a later policy may take it away\n"
        "    submit: [event]\n    read: own\n    subscribe: [\"event.*\"]",
        "  quiet:\n    submit: []\n    read: own\n    subscribe: []"))
    with EmbeddedRedis(tmp_path / "redis", persistent=False) as server, \
            RecordingServer() as receiver:
        env = {"INTEGRATION_REDIS_URL": server.url, "INTEGRATION_POLICY_FILE": str(narrowed)}
        worker = WorkerProcess([*default_registry().queues(), DEFAULT_QUEUE],
                               tmp_path / "worker.log", env=env)
        beat = BeatProcess(tmp_path / "beat.log", schedule_file(tmp_path), **env)
        api = make_app(redis_url=server.url, policy_file=str(POLICY)).test_client()
        quiet, alice = bearer("quinn", "quiet"), ALICE
        try:
            every = {"every": 1, "type": "event", "data": {}}
            assert api.post("/api/v1/schedules", headers=quiet,
                            json={"name": "pulse", **every}).status_code == 201
            assert api.post("/api/v1/schedules", headers=alice,
                            json={"name": "pulse", **every}).status_code == 201
            hooked = api.post("/api/v1/subscriptions", headers=quiet, json={
                "url": receiver.url("/quiet"), "topics": ["event.succeeded"]}).get_json()
            beat.wait_active()

            def refused(owner: str) -> dict[str, Any] | None:
                path = f"/api/v1/schedules/{scoped(owner, 'pulse')}"
                found = api.get(path, headers=AUDITOR).get_json()
                return found if found.get("refused_reason") else None

            # The narrowed policy no longer lets "quiet" submit events, nor subscribe.
            reason = wait_for(lambda: refused("quinn"), timeout=20,
                              message="quinn's firing refused")["refused_reason"]
            assert "may no longer submit 'event'" in reason
            alice_fired = wait_for(lambda: api.get("/api/v1/messages?type=event",
                                                   headers=alice).get_json()["items"],
                                   timeout=20, message="alice's schedule fires")
            submit(api, quiet)  # the gateway still takes it; its event's delivery is refused
            wait_for(lambda: api.get(f"/api/v1/subscriptions/{hooked['id']}", headers=quiet)
                     .get_json().get("refused_reason"), timeout=20,
                     message="quinn's delivery refused")
            assert not receiver.seen("/quiet")
            assert refused("alice") is None and alice_fired

            # Revoking alice stops what she made before, and says why.
            Revocations(redis.Redis.from_url(server.url), "integration", 3600).revoke_subject(
                "alice")
            reason = wait_for(lambda: refused("alice"), timeout=20,
                              message="alice's firing refused")["refused_reason"]
            assert "was revoked" in reason
        finally:
            beat.stop()
            worker.stop()
