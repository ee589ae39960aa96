"""Action targets chosen by alert labels stay within the playbook's ``allowed_targets``,
through the real loop (a real worker runs every stage)."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from tests.conftest import delivery_of, wait_status


def flatten(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node["caused"] for n in flatten(child))]


def diagnosis_of(client: FlaskClient, auth: dict[str, str], host: str) -> str:
    """Send a RestartByLabel alert for ``host``; the id of the diagnosis the loop made."""
    response = client.post("/api/v1/messages", headers=auth, json={
        "type": "alert", "source": "label-targets",
        "data": {"name": "RestartByLabel", "labels": {"host": host}}})
    assert response.status_code == 202
    stage = wait_status(client, auth, delivery_of(client, auth, response.get_json()["id"],
                                                  "consumer.loop-diagnosing", timeout=30))
    assert stage["status"] == "succeeded", stage
    return str(stage["result"]["diagnosis"])


def planning_of(client: FlaskClient, auth: dict[str, str], diagnosis_id: str) -> dict[str, Any]:
    return wait_status(client, auth, delivery_of(client, auth, diagnosis_id,
                                                 "consumer.loop-planning", timeout=30))


def test_a_label_naming_an_allowed_target_becomes_the_action(
        client: FlaskClient, auth: dict[str, str], worker: Any) -> None:
    """host=test-restart is in the playbook's allowed_targets: the http action is planned
    (and, as a dry run, says what it would call)."""
    planning = planning_of(client, auth, diagnosis_of(client, auth, "test-restart"))
    assert planning["status"] == "succeeded", planning
    action = wait_status(client, auth, planning["result"]["action"])
    assert action["status"] == "succeeded"
    assert action["result"]["target"] == "test-restart"
    assert action["result"]["would_call"]["url"].endswith("/restart")


def test_a_label_naming_another_declared_target_is_refused_on_the_message(
        client: FlaskClient, auth: dict[str, str], worker: Any) -> None:
    """host=test-flaky is a declared http target, but not one this playbook allows: no
    action is made, and the planning delivery ends dead with TargetNotAllowed."""
    diagnosis_id = diagnosis_of(client, auth, "test-flaky")
    planning = planning_of(client, auth, diagnosis_id)
    assert planning["status"] == "dead"
    assert planning["error"]["type"] == "TargetNotAllowed"
    assert "refused target 'test-flaky'" in planning["error"]["message"]
    trace = client.get(f"/api/v1/messages/{diagnosis_id}/trace", headers=auth).get_json()
    types = [node["type"] for node in flatten(trace)]
    assert "consumer.loop-planning" in types and "action" not in types
