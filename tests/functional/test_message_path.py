"""The message path end to end: gateway -> routed queue -> real worker -> recorded result."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import mine, wait_status

SAMPLES: dict[str, dict[str, Any]] = {
    "metric": {"name": "cpu_usage", "value": 97.5, "unit": "percent",
               "labels": {"host": "web-1"}, "thresholds": {"warning": 80, "critical": 95}},
    "alert": {"name": "HighCPU", "severity": "critical", "labels": {"host": "web-1"}},
    "diagnosis": {"alert": "HighCPU", "probable_cause": "runaway process", "confidence": 0.9,
                  "recommended_action": "restart-service"},
    "action": {"action": "restart-service", "target": "web-1", "parameters": {"unit": "nginx"}},
    "action.result": {"action_id": "a-1", "status": "succeeded", "duration_ms": 1200},
    "event": {"anything": "goes", "count": 3},
}

#: What each built-in handler must have concluded about its sample.
EXPECTED: dict[str, dict[str, Any]] = {
    "metric": {"breached": True, "severity": "critical"},
    "alert": {"needs_diagnosis": True, "severity": "critical"},
    "diagnosis": {"actionable": True, "recommended_action": "restart-service"},
    "action": {"executed": True, "executor": "noop", "target": "web-1"},
    "action.result": {"remediated": True},
    "event": {"fields": ["anything", "count"]},
}


def submit(client: FlaskClient, auth: dict[str, str], body: Any) -> Any:
    return client.post("/api/v1/messages", json=body, headers=auth)


@pytest.mark.parametrize("message_type", list(SAMPLES))
def test_every_builtin_type_is_routed_to_its_queue_and_succeeds(
    client: FlaskClient, auth: dict[str, str], worker: Any, message_type: str
) -> None:
    """A message of each built-in type travels on its own queue and ends succeeded."""
    response = submit(client, auth, {"type": message_type, "source": "tests",
                                     "data": SAMPLES[message_type]})
    assert response.status_code == 202, response.get_json()
    accepted = response.get_json()
    assert accepted["status_url"] == f"/api/v1/messages/{accepted['id']}"
    assert response.headers["Location"] == accepted["status_url"]

    record = wait_status(client, auth, accepted["id"])
    assert record["status"] == "succeeded", record.get("error")
    assert record["delivered_queue"] == message_type
    assert record["attempts"] == 1
    assert record["channel"] == "rest"
    assert record["owner"] == "tester"
    for key, value in EXPECTED[message_type].items():
        assert record["result"][key] == value
    assert record["topic"] == f"{message_type}.succeeded"


def test_status_history_shows_each_step_in_order(
    client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    """The history reads accepted, queued, processing, succeeded, then the published event."""
    response = submit(client, auth, {"type": "alert", "source": "tests",
                                     "data": SAMPLES["alert"]})
    record = wait_status(client, auth, response.get_json()["id"])
    steps = [entry["status"] for entry in record["history"]]
    assert steps == ["accepted", "queued", "processing", "succeeded", "published"]
    for stamp in ("accepted_at", "queued_at", "started_at", "finished_at"):
        assert record[stamp]
    assert record["accepted_at"] <= record["started_at"] <= record["finished_at"]


def test_result_event_is_recorded_in_the_event_log(
    client: FlaskClient, auth: dict[str, str], worker: Any, redis_client: Any
) -> None:
    """Processing publishes a CloudEvent on <type>.succeeded, linked to the message."""
    response = submit(client, auth, {"type": "metric", "source": "tests",
                                     "data": SAMPLES["metric"], "correlationid": "chain-42"})
    message_id = response.get_json()["id"]
    wait_status(client, auth, message_id)
    entries = redis_client.xrange("integration:events")
    events = [json.loads(fields[b"event"]) for _, fields in entries
              if fields[b"message_id"].decode() == message_id]
    assert len(events) == 1
    assert events[0]["type"] == "metric.succeeded"
    assert events[0]["causationid"] == message_id
    assert events[0]["correlationid"] == mine("chain-42")
    assert events[0]["data"]["result"]["severity"] == "critical"


def test_list_filters_by_type_and_status_and_pages(
    client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    """Listing filters by type and status and pages through every message exactly once."""
    source = "paging-test"
    ids = []
    for index in range(5):
        response = submit(client, auth, {"type": "diagnosis", "source": source,
                                         "data": {**SAMPLES["diagnosis"],
                                                  "probable_cause": f"cause {index}"}})
        ids.append(response.get_json()["id"])
    for message_id in ids:
        wait_status(client, auth, message_id)

    seen: list[str] = []
    cursor = None
    while True:
        query = {"type": "diagnosis", "status": "succeeded", "limit": 2}
        if cursor:
            query["cursor"] = cursor
        page = client.get("/api/v1/messages", query_string=query, headers=auth).get_json()
        assert len(page["items"]) <= 2
        assert all(i["type"] == "diagnosis" and i["status"] == "succeeded" for i in page["items"])
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert set(ids) <= set(seen)
    assert len(seen) == len(set(seen)), "a message appeared on two pages"
    newest_first = [i for i in seen if i in ids]
    assert newest_first == list(reversed(ids))

    none_dead = client.get("/api/v1/messages", query_string={"type": "diagnosis",
                                                            "status": "dead"}, headers=auth)
    assert all(item["id"] not in ids for item in none_dead.get_json()["items"])


def test_types_lists_builtins_with_queues_and_schemas(client: FlaskClient,
                                                       auth: dict[str, str]) -> None:
    """GET /types describes every built-in type and the task name direct callers use."""
    body = client.get("/api/v1/types", headers=auth).get_json()
    assert body["task"] == "integration.process"
    by_name = {t["name"]: t for t in body["types"]}
    assert set(SAMPLES) <= set(by_name)
    assert by_name["metric"]["queue"] == "metric"
    assert "value" in by_name["metric"]["schema"]["properties"]


def test_openapi_document_is_generated_from_the_models(client: FlaskClient) -> None:
    """The OpenAPI 3.1 document describes the submit endpoint with the envelope schema."""
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    post = document["paths"]["/api/v1/messages"]["post"]
    assert "202" in post["responses"] and "422" in post["responses"]
    assert "Envelope" in document["components"]["schemas"]
    assert client.get("/docs").status_code == 302


def test_health_and_readiness(client: FlaskClient) -> None:
    """healthz answers while the process lives; readyz checks broker and store."""
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"store": "ok", "broker": "ok"}


def test_received_messages_start_from_zero(client: FlaskClient) -> None:
    """Each public type's outcomes are exported at 0 before the first message."""
    text = client.get("/metrics").get_data(as_text=True)
    for outcome in ("accepted", "rejected", "duplicate", "throttled", "unavailable"):
        assert (f'integration_messages_received_total{{channel="websocket",outcome="{outcome}",'
                f'type="event"}} 0.0') in text
    assert 'channel="alertmanager",outcome="accepted",type="alert"} 0.0' in text
    assert 'channel="alertmanager",outcome="accepted",type="event"}' not in text


def test_received_messages_are_counted_by_type_channel_and_outcome(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    """integration_messages_received_total moves for accepted, rejected and duplicate ones."""
    import re

    def counts() -> dict[str, float]:
        text = client.get("/metrics").get_data(as_text=True)
        return {m[0]: float(m[1]) for m in re.findall(
            r"^(integration_messages_received_total\{[^}]*\}) (\S+)$", text, re.MULTILINE)}

    def key(kind: str, outcome: str) -> str:
        return (f'integration_messages_received_total{{channel="rest",outcome="{outcome}",'
                f'type="{kind}"}}')

    submit(client, auth, {"type": "event", "source": "count", "data": {}, "id": "count-1"})
    submit(client, auth, {"type": "event", "source": "count", "data": {}, "id": "count-1"})
    submit(client, auth, [{"type": "event", "source": "count", "data": {}},
                          {"type": "no.such.type", "source": "count"}])
    client.post("/api/v1/messages", data=b"{", content_type="application/json", headers=auth)
    found = counts()
    assert found[key("event", "accepted")] == 2
    assert found[key("event", "duplicate")] == 1
    assert found[key("unknown", "rejected")] == 2


def test_both_openapi_routes_serve_problems_as_problem_documents(client: FlaskClient) -> None:
    """``/openapi.json`` and spectree's ``/docs/openapi.json`` serve the same document, in which
    a problem answer is ``application/problem+json``, however often it is asked for."""
    first = client.get("/openapi.json").get_json()
    assert client.get("/docs/openapi.json").get_json() == first
    assert client.get("/openapi.json").get_json() == first
    responses = first["paths"]["/api/v1/messages"]["post"]["responses"]
    assert list(responses["422"]["content"]) == ["application/problem+json"]
    assert list(responses["default"]["content"]) == ["application/problem+json"]
