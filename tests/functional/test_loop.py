"""The self-healing loop with the shipped rules, through a real worker: a metric over its
threshold runs to ``action.result`` on its own, and a flapping metric alerts once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import delivery_of, wait_for, wait_status


def send_metric(client: FlaskClient, auth: dict[str, str], host: str, value: float,
                at: datetime | None = None) -> str:
    data: dict[str, Any] = {"name": "cpu_usage_percent", "value": value,
                            "labels": {"host": host}}
    if at is not None:
        data["observed_at"] = at.isoformat()
    response = client.post("/api/v1/messages", headers=auth,
                           json={"type": "metric", "source": "loop-test", "data": data})
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["id"])


def stage_result(client: FlaskClient, auth: dict[str, str], cause: str,
                 stage: str) -> dict[str, Any]:
    """The result of the loop stage's delivery for the message ``cause``."""
    record = wait_status(client, auth,
                         delivery_of(client, auth, cause, f"consumer.loop-{stage}", timeout=30),
                         timeout=30)
    assert record["status"] == "succeeded", record
    return dict(record["result"])


def flatten(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node["caused"] for n in flatten(child))]


def test_a_metric_over_its_threshold_runs_the_loop_to_the_action_result(
    client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    """metric -> alert -> diagnosis -> action -> action.result, each caused by the one before,
    all in one trace under one correlation id."""
    host = f"web-{uuid.uuid4().hex[:6]}"
    metric_id = send_metric(client, auth, host, 97.5)
    [alert_id] = stage_result(client, auth, metric_id, "alerting")["alerts"]
    diagnosis_id = stage_result(client, auth, alert_id, "diagnosing")["diagnosis"]
    action_id = stage_result(client, auth, diagnosis_id, "planning")["action"]
    result_id = stage_result(client, auth, action_id, "recording")["action_result"]
    final = wait_status(client, auth, result_id)
    assert final["status"] == "succeeded" and final["type"] == "action.result"
    assert final["result"]["action_id"] == action_id
    action = wait_status(client, auth, action_id)
    assert action["envelope"]["data"]["target"] == host
    assert action["envelope"]["data"]["action"] == "restart-service"

    trace = client.get(f"/api/v1/messages/{metric_id}/trace", headers=auth).get_json()
    nodes = flatten(trace)
    types = [n["type"] for n in nodes]
    for expected in ("metric", "alert", "diagnosis", "action", "action.result"):
        assert types.count(expected) == 1, types
    assert len({n["correlationid"] for n in nodes}) == 1
    assert all(n["owner"] == "tester" for n in nodes if "owner" in n)


def test_a_flapping_metric_raises_one_alert_and_one_resolution(
    client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    """Values flapping above the clear level keep one alert firing; dropping below it
    resolves once, and the resolution closes the loop instead of starting one."""
    host = f"db-{uuid.uuid4().hex[:6]}"
    start = datetime.now(UTC) - timedelta(seconds=30)
    alerts: list[str] = []
    for step, value in enumerate((95, 85, 96, 84, 93, 70, 75)):
        metric_id = send_metric(client, auth, host, value, start + timedelta(seconds=step))
        alerts += stage_result(client, auth, metric_id, "alerting")["alerts"]
    assert len(alerts) == 2, "one firing, one resolved"
    firing, resolved = (wait_status(client, auth, a) for a in alerts)
    assert firing["envelope"]["data"]["status"] == "firing"
    assert resolved["envelope"]["data"]["status"] == "resolved"
    assert firing["result"]["fingerprint"] == resolved["result"]["fingerprint"]
    closed = stage_result(client, auth, alerts[1], "diagnosing")
    assert closed == {"closed": firing["result"]["fingerprint"]}
    wait_for(lambda: stage_result(client, auth, alerts[0], "diagnosing").get("diagnosis"),
             message="the firing alert was diagnosed")


def test_alertmanager_alerts_run_the_loop_once_and_a_resolution_closes_it(
    client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    """A firing alert from Alertmanager, sent again inside the dedup window, runs the loop to
    one action.result; its resolution is diagnosed as closed, starting nothing."""
    host = f"app-{uuid.uuid4().hex[:6]}"
    fingerprint = uuid.uuid4().hex[:16]

    def notification(status: str) -> dict[str, Any]:
        return {
            "version": "4", "receiver": "integration-bus", "status": status,
            "groupKey": '{}:{alertname="HighCPU"}', "truncatedAlerts": 0,
            "externalURL": "http://alertmanager.example.org:9093",
            "groupLabels": {"alertname": "HighCPU"}, "commonLabels": {},
            "commonAnnotations": {},
            "alerts": [{
                "status": status, "fingerprint": fingerprint,
                "labels": {"alertname": "HighCPU", "host": host, "severity": "critical"},
                "annotations": {"summary": f"CPU high on {host}"},
                "startsAt": "2026-01-31T12:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z" if status == "firing"
                else "2026-01-31T12:20:00Z",
                "generatorURL": "http://prometheus.example.org:9090/graph"}]}

    first = client.post("/api/v1/alertmanager", headers=auth, json=notification("firing"))
    repeat = client.post("/api/v1/alertmanager", headers=auth, json=notification("firing"))
    assert first.status_code == repeat.status_code == 202
    [sent], [again] = first.get_json()["results"], repeat.get_json()["results"]
    assert again["duplicate"] is True and again["id"] == sent["id"]

    diagnosis_id = stage_result(client, auth, sent["id"], "diagnosing")["diagnosis"]
    action_id = stage_result(client, auth, diagnosis_id, "planning")["action"]
    result_id = stage_result(client, auth, action_id, "recording")["action_result"]
    assert wait_status(client, auth, result_id)["status"] == "succeeded"
    trace = client.get(f"/api/v1/messages/{sent['id']}/trace", headers=auth).get_json()
    assert [n["type"] for n in flatten(trace)].count("action.result") == 1

    resolved = client.post("/api/v1/alertmanager", headers=auth,
                           json=notification("resolved")).get_json()["results"][0]
    assert resolved["duplicate"] is False
    assert stage_result(client, auth, resolved["id"], "diagnosing") == {"closed": fingerprint}


def test_an_alert_edge_is_not_lost_when_its_emit_fails(redis_url: str) -> None:
    """The threshold state moves before the alert is emitted: a delivery retried after a
    failed emit still emits the alert its first attempt found."""
    from integration.app import default_evaluator, default_rules
    from integration.events.consumers import ConsumerContext
    from integration.loop.stages import Stages

    raise_alerts = Stages(default_rules, default_evaluator).raise_alerts
    from integration.messages.envelope import Envelope
    from integration.messages.retry import TransientError

    host = f"flaky-emit-{uuid.uuid4().hex[:6]}"
    event = {"subject": "m1", "data": {"result": {
        "metric": "cpu_usage_percent", "value": 99.0, "labels": {"host": host}}}}
    delivery = Envelope(id=f"delivery-{uuid.uuid4().hex[:8]}", type="consumer.loop-alerting",
                        source="test", data={"topic": "metric.succeeded", "event": event})
    emitted: list[dict[str, Any]] = []

    def failing(type: str, data: Any, **attributes: Any) -> str:
        raise TransientError("the alert queue is full")

    def recording(type: str, data: Any, **attributes: Any) -> str:
        emitted.append(dict(data))
        return "alert-1"

    with pytest.raises(TransientError):
        raise_alerts(event, ConsumerContext(delivery, "metric.succeeded", failing))
    assert raise_alerts(event, ConsumerContext(delivery, "metric.succeeded", recording)) == \
        {"alerts": ["alert-1"]}
    assert [(a["name"], a["status"], a["labels"]["host"]) for a in emitted] == \
        [("HighCPU", "firing", host)]
