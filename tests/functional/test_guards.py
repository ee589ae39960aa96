"""Circuit breakers and storm guards with a real worker of two processes (fault tests)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis
from flask.testing import FlaskClient

from tests.conftest import wait_for, wait_status
from tests.support.fault_types import DUPLICATES, LEDGER

RESET_TIMEOUT = 2.0  # INTEGRATION_BREAKER_RESET_TIMEOUT_SECONDS of the test environment


def submit(client: FlaskClient, auth: dict[str, str], type_: str, **data: Any) -> str:
    response = client.post("/api/v1/messages", headers=auth,
                           json={"type": type_, "source": "guards", "data": data})
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["id"])


def breaker(client: FlaskClient, auth: dict[str, str], name: str) -> dict[str, Any] | None:
    breakers = client.get("/api/v1/breakers", headers=auth).get_json()["breakers"]
    return next((b for b in breakers if b["name"] == name), None)


def test_a_failing_downstream_opens_the_breaker_and_everything_recovers(
    client: FlaskClient, auth: dict[str, str], worker: Any, redis_client: redis.Redis
) -> None:
    """Messages wait deferred while the breaker is open, spend no attempts there, and all
    succeed once the target is back; while down, one trial at a time reaches it."""
    target = uuid.uuid4().hex[:8]
    redis_client.set(f"tests:down:{target}", 1)
    keys = [uuid.uuid4().hex[:10] for _ in range(8)]
    ids = [submit(client, auth, "test.downstream", target=target, key=k) for k in keys]

    opened = wait_for(lambda: (b := breaker(client, auth, f"test:{target}")) and
                      b["state"] == "open" and b, message="breaker open")
    assert opened["closes_at"] and opened["failures"] >= 3
    wait_for(lambda: any(client.get(f"/api/v1/messages/{i}", headers=auth).get_json()
                         ["status"] == "deferred" for i in ids), message="a deferred message")
    down_for = 3 * RESET_TIMEOUT
    time.sleep(down_for)
    redis_client.delete(f"tests:down:{target}")

    records = [wait_status(client, auth, i, timeout=40) for i in ids]
    assert {r["status"] for r in records} == {"succeeded"}
    assert all(redis_client.sismember(LEDGER, k) for k in keys)
    assert not set(keys) & {d.decode() for d in redis_client.lrange(DUPLICATES, 0, -1)}
    for record in records:  # an attempt is a run of the handler; waiting deferred is not one
        runs = sum(h["status"] == "processing" for h in record["history"])
        assert record["attempts"] == runs
    waited_only = [r for r in records if r["attempts"] == 1 and
                   any(h["status"] == "deferred" for h in r["history"])]
    assert waited_only, "a message that only waited for the breaker spent a single attempt"

    calls_while_down = [c for c in redis_client.lrange(f"tests:calls:{target}", 0, -1)
                        if c.endswith(b" 1")]
    # fail_max calls open it (plus the other pool process's call already admitted), then
    # one trial per reset period: never the whole backlog at once.
    trials = down_for / RESET_TIMEOUT + 2
    assert len(calls_while_down) <= 3 + 2 + trials, calls_while_down
    assert wait_for(lambda: breaker(client, auth, f"test:{target}")["state"] == "closed",
                    message="breaker closed again")


def test_a_repeated_action_is_held_then_released_or_dropped(
    client: FlaskClient, auth: dict[str, str], worker: Any, redis_client: redis.Redis
) -> None:
    """Past the loop limit (3) the same action on the same target is held, not executed."""
    target = uuid.uuid4().hex[:8]
    keys = [uuid.uuid4().hex[:10] for _ in range(5)]
    ids = []
    for key in keys[:3]:
        ids.append(submit(client, auth, "test.action", action="restart", target=target, key=key))
        assert wait_status(client, auth, ids[-1])["status"] == "succeeded"
    held = submit(client, auth, "test.action", action="restart", target=target, key=keys[3])
    record = wait_status(client, auth, held, statuses=("held",))
    assert "restart" in record["hold"]["reason"]
    assert record["topic"] == "test.action.held"
    assert not redis_client.sismember(LEDGER, keys[3])

    dropped = submit(client, auth, "test.action", action="restart", target=target, key=keys[4])
    wait_status(client, auth, dropped, statuses=("held",))
    assert client.post(f"/api/v1/messages/{dropped}/drop", headers=auth).status_code == 200
    assert client.get(f"/api/v1/messages/{dropped}", headers=auth).get_json()["status"] == "dead"

    released = client.post(f"/api/v1/messages/{held}/release", headers=auth)
    assert released.status_code == 202
    assert wait_status(client, auth, held)["status"] == "succeeded"
    assert redis_client.sismember(LEDGER, keys[3])
    assert not redis_client.sismember(LEDGER, keys[4])
    again = client.post(f"/api/v1/messages/{held}/release", headers=auth)
    assert again.status_code == 409


def test_an_action_target_over_its_rate_limit_waits_deferred(
    client: FlaskClient, auth: dict[str, str], worker: Any, redis_client: redis.Redis
) -> None:
    """4 actions per 3 s per target: the rest are deferred, not dropped, and run later."""
    target = uuid.uuid4().hex[:8]
    keys = [uuid.uuid4().hex[:10] for _ in range(6)]
    ids = [submit(client, auth, "test.action", action=f"step-{i}", target=target, key=k)
           for i, k in enumerate(keys)]
    records = [wait_status(client, auth, i, timeout=30) for i in ids]
    assert {r["status"] for r in records} == {"succeeded"}
    waited = [r for r in records if any(h["status"] == "deferred" for h in r["history"])]
    assert len(waited) >= 2
    assert all(r["attempts"] == 1 for r in records)
    assert all(redis_client.sismember(LEDGER, k) for k in keys)


def test_release_and_drop_need_the_permission(client: FlaskClient) -> None:
    from integration.security.tokens import issue_token
    from tests.conftest import TEST_SECRET

    headers = {"Authorization": "Bearer " + issue_token(TEST_SECRET, "m", ["monitoring"])}
    response = client.post("/api/v1/messages/anything/release", headers=headers)
    assert response.status_code == 403
    assert response.get_json()["permission"] == "manage:actions"


def test_only_one_trial_call_runs_while_half_open_across_processes(
    redis_client: redis.Redis
) -> None:
    """Two breakers for one target (as in two worker processes): while half-open, one trial
    is admitted and the other waits deferred; success closes the breaker for both."""
    import threading

    import pytest

    from integration.worker.guards import Deferred, GuardSettings, SharedBreaker

    settings = GuardSettings(fail_max=2, reset_timeout=2)  # pybreaker stores whole seconds
    name = f"test:{uuid.uuid4().hex[:8]}"
    first, second = (SharedBreaker(name, redis_client, "guards-test", settings)
                     for _ in range(2))

    def fail() -> None:
        raise ConnectionError("down")

    for _ in range(2):
        with first.admitted() as call, pytest.raises(ConnectionError):
            call(fail)
    with pytest.raises(Deferred):
        second.admitted().__enter__()
    time.sleep(2.1)  # past the reset timeout: the next caller makes the trial

    in_trial, release = threading.Event(), threading.Event()

    def slow_success() -> str:
        in_trial.set()
        release.wait(5)
        return "ok"

    outcome: list[str] = []

    def run_trial() -> None:
        with first.admitted() as call:
            outcome.append(call(slow_success))

    trial = threading.Thread(target=run_trial)
    trial.start()
    assert in_trial.wait(5)
    with pytest.raises(Deferred, match="trial in flight"):
        second.admitted().__enter__()
    release.set()
    trial.join(5)
    assert outcome == ["ok"]
    assert second.breaker.current_state == "closed"
