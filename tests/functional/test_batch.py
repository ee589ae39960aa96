"""Batches: one result per item in order; accepted means in the broker, exactly."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from integration.ops.embedded_redis import EmbeddedRedis
from tests.conftest import wait_status


def metric(index: int, **extra: Any) -> dict[str, Any]:
    return {"type": "metric", "source": "batch-tests",
            "data": {"name": f"m{index}", "value": float(index), **extra}}


def test_mixed_batch_reports_each_item_in_order(client: FlaskClient, auth: dict[str, str],
                                                worker: Any) -> None:
    """Valid items are accepted and processed; invalid ones carry their own problem."""
    batch = [metric(0), {"type": "metric", "source": "x", "data": {"value": "high"}},
             metric(2), {"type": "nope", "source": "x"}, metric(4)]
    response = client.post("/api/v1/messages", json=batch, headers=auth)
    assert response.status_code == 202
    body = response.get_json()
    assert (body["accepted"], body["rejected"]) == (3, 2)
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in results] == [202, 422, 202, 422, 202]
    assert results[1]["problem"]["type"] == "/problems/invalid-message"
    locations = {tuple(e["loc"]) for e in results[1]["problem"]["errors"]}
    assert locations == {(1, "data", "name"), (1, "data", "value")}
    assert results[3]["problem"]["errors"][0]["loc"] == [3, "type"]
    for item in (results[0], results[2], results[4]):
        record = wait_status(client, auth, item["id"])
        assert record["status"] == "succeeded"
        assert item["status_url"] == f"/api/v1/messages/{item['id']}"


def test_batch_with_no_valid_item_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    """A batch where nothing was accepted is a problem document that still lists each item."""
    response = client.post("/api/v1/messages", json=[{"type": "metric"}, 42], headers=auth)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    document = response.get_json()
    assert [r["status"] for r in document["results"]] == [422, 422]


def test_empty_batch_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/api/v1/messages", json=[], headers=auth)
    assert response.status_code == 422


def test_duplicate_ids_within_a_batch(client: FlaskClient, auth: dict[str, str]) -> None:
    """The second use of an id in one batch is a 409 for that item only."""
    batch = [{**metric(0), "id": "batch-dup"}, {**metric(1), "id": "batch-dup"}, metric(2)]
    body = client.post("/api/v1/messages", json=batch, headers=auth).get_json()
    assert [r["status"] for r in body["results"]] == [202, 409, 202]


@pytest.fixture
def small_broker(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A broker of its own with little memory, so that it fills up during one batch."""
    server = EmbeddedRedis(tmp_path, persistent=False).start()
    client = redis.Redis(port=server.port)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + 256 * 1024)
    client.close()
    yield server
    server.stop()


def queued_ids(broker: redis.Redis, queue: str) -> list[str]:
    """Task ids of the Celery messages waiting in a Redis queue, oldest first."""
    ids = []
    for raw in reversed(broker.lrange(queue, 0, -1)):
        message = json.loads(raw)
        assert message["headers"]["task"] == "integration.process"
        body = json.loads(base64.b64decode(message["body"]))
        assert body[0][0]["id"] == message["headers"]["id"]
        ids.append(message["headers"]["id"])
    return ids


def test_broker_filling_midway_reports_exactly_what_was_enqueued(
    make_app: Callable[..., Flask], auth: dict[str, str], small_broker: EmbeddedRedis
) -> None:
    """Items enqueued before the broker refused are 202; every later item is 503, not lost."""
    app = make_app(broker_url=small_broker.url, publish_chunk_size=20)
    client = app.test_client()
    batch = [{**metric(i, labels={"pad": "p" * 900}), "id": f"fill-{i}"} for i in range(500)]
    response = client.post("/api/v1/messages", json=batch, headers=auth)
    assert response.status_code == 202
    results = response.get_json()["results"]
    accepted = [r["id"] for r in results if r["status"] == 202]
    refused = [r for r in results if r["status"] == 503]
    assert accepted and refused, "the broker should fill up midway through the batch"
    assert len(accepted) + len(refused) == 500
    # Accepted items come first: once the broker refused, nothing after was reported accepted.
    assert [r["status"] for r in results] == [202] * len(accepted) + [503] * len(refused)
    assert refused[0]["problem"]["type"] == "/problems/service-unavailable"

    broker = redis.Redis(port=small_broker.port)
    assert queued_ids(broker, "metric") == accepted
    broker.close()
    refused_ids = [len(accepted), len(accepted) + 1, 498, 499]
    for index in refused_ids:  # refused: no status record left behind
        response = client.get(f"/api/v1/messages/fill-{index}", headers=auth)
        assert response.status_code == 404
    sample = accepted[:3] + accepted[-3:]
    statuses = {client.get(f"/api/v1/messages/{i}", headers=auth).get_json()["status"]
                for i in sample}
    assert statuses == {"queued"}


def test_listing_pages_through_a_whole_batch_exactly_once(client: FlaskClient,
                                                          auth: dict[str, str]) -> None:
    """Messages of one batch share an acceptance time; paging still returns each once."""
    batch = [{"type": "event", "source": "paging", "data": {"n": i}} for i in range(230)]
    results = client.post("/api/v1/messages", json=batch, headers=auth).get_json()["results"]
    ids = {r["id"] for r in results}
    seen: list[str] = []
    cursor = None
    for _ in range(50):
        query = {"type": "event", "limit": 40, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/messages", query_string=query, headers=auth).get_json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert ids <= set(seen)
    assert len(seen) == len(set(seen))


def test_a_full_queue_refuses_its_type_with_503(make_app: Callable[..., Flask],
                                                auth: dict[str, str], tmp_path: Path) -> None:
    """Backpressure: past INTEGRATION_MAX_QUEUE_DEPTH a type gets 503; other types go on."""
    with EmbeddedRedis(tmp_path / "broker", persistent=False) as broker:
        client = make_app(broker_url=broker.url, max_queue_depth=3).test_client()
        codes = [client.post("/api/v1/messages", json=metric(i), headers=auth).status_code
                 for i in range(4)]
        assert codes == [202, 202, 202, 503]
        refused = client.post("/api/v1/messages", json=metric(9), headers=auth)
        assert refused.headers["Retry-After"]
        assert "over its limit" in refused.get_json()["detail"]
        alert = {"type": "alert", "source": "t", "data": {"name": "x"}}
        body = client.post("/api/v1/messages", json=[metric(5), alert], headers=auth).get_json()
        assert [r["status"] for r in body["results"]] == [503, 202]
        assert redis.Redis(port=broker.port).llen("metric") == 3
