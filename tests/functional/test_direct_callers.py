"""Direct callers: integration.client and plain Celery send_task take the same path."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis
from celery import Celery

from integration.broker.publisher import Outgoing
from integration.messages.problems import InvalidMessage
from integration.messages.routing import PROCESS_TASK
from integration.ops.client import Client
from integration.settings import Settings
from tests.conftest import wait_for


@pytest.fixture
def direct(settings: Settings) -> Client:
    return Client(settings, owner="billing-service")


@pytest.fixture
def celery_app(redis_url: str) -> Celery:
    """A bare Celery app, as another service would configure it: broker URL and JSON."""
    return Celery("other-service", broker=redis_url, set_as_current=False,
                  config_source={"task_serializer": "json", "accept_content": ["json"],
                                 "task_routes": ("integration.app.route_task",)})


def final(direct: Client, message_id: str) -> dict[str, Any]:
    return wait_for(lambda: (r := direct.status(message_id)) and r["status"] in
                    ("succeeded", "dead") and r, message=f"{message_id} finished")


def test_client_submits_through_the_same_task_and_queue(direct: Client, worker: Any) -> None:
    """A message sent with the client is routed by type and recorded like an HTTP one."""
    message_id = direct.submit("action", {"action": "restart", "target": "db-1"},
                               source="billing", correlationid="c-77")
    record = final(direct, message_id)
    assert record["status"] == "succeeded"
    assert record["channel"] == "direct"
    assert record["owner"] == "billing-service"
    assert record["delivered_queue"] == "action"
    assert record["envelope"]["correlationid"] == "c-77"


def test_client_refuses_an_invalid_message_before_sending(direct: Client) -> None:
    with pytest.raises(InvalidMessage) as caught:
        direct.submit("action", {"target": "db-1"}, source="billing")
    assert caught.value.extensions["errors"][0]["loc"] == [0, "data", "action"]


def test_plain_send_task_is_routed_by_type_and_processed(celery_app: Celery, direct: Client,
                                                         worker: Any) -> None:
    """Any Celery producer can call the task by name; the router picks the type's queue."""
    envelope = {"id": "plain-send-1", "type": "alert", "source": "legacy",
                "data": {"name": "DiskFull"}}
    celery_app.send_task(PROCESS_TASK, args=[envelope])
    record = final(direct, "plain-send-1")
    assert record["status"] == "succeeded"
    assert record["delivered_queue"] == "alert"
    assert record["channel"] == "direct"


def test_invalid_envelope_sent_straight_to_the_task_ends_dead(celery_app: Celery,
                                                              direct: Client,
                                                              worker: Any) -> None:
    """The worker validates again: a bad envelope is recorded dead with its errors."""
    envelope = {"id": "bad-direct-1", "type": "metric", "source": "legacy",
                "data": {"name": "cpu", "value": "very high"}}
    celery_app.send_task(PROCESS_TASK, args=[envelope], queue="metric")
    record = final(direct, "bad-direct-1")
    assert record["status"] == "dead"
    assert record["error"]["type"] == "ValidationError"
    assert record["error"]["errors"][0]["loc"] == ["data", "value"]
    assert record["topic"] == "metric.dead"


def test_text_the_store_cannot_write_sent_to_the_task_ends_dead(celery_app: Celery,
                                                                direct: Client,
                                                                worker: Any) -> None:
    """A lone surrogate reaches the worker through Celery's JSON: the message ends dead with
    the validation error naming the field, and the worker goes on to the next one."""
    envelope = {"id": "lone-direct-1", "type": "event", "source": "legacy",
                "data": {"note": "\ud800"}}
    celery_app.send_task(PROCESS_TASK, args=[envelope], queue="event")
    celery_app.send_task(PROCESS_TASK, args=[{**envelope, "id": "lone-direct-2",
                                              "data": {"note": "fine"}}], queue="event")
    record = final(direct, "lone-direct-1")
    assert record["status"] == "dead"
    assert record["error"]["type"] == "ValidationError"
    assert [(e["loc"], e["type"]) for e in record["error"]["errors"]] == \
        [(["data", "note"], "string_unicode")]
    assert final(direct, "lone-direct-2")["status"] == "succeeded"


def test_garbage_sent_to_the_task_ends_dead_under_the_task_id(celery_app: Celery,
                                                              direct: Client,
                                                              worker: Any) -> None:
    """Even a non-object argument is recorded, under the Celery task id."""
    result = celery_app.send_task(PROCESS_TASK, args=["not an envelope"], task_id="garbage-1")
    record = final(direct, result.id)
    assert record["status"] == "dead"
    assert record["error"]["errors"][0]["type"] == "object_type"


def test_redis_batch_messages_match_celerys_own(celery_app: Celery, direct: Client,
                                                redis_client: redis.Redis) -> None:
    """The batch publisher writes the same wire message that send_task does."""
    envelope = {"id": "wire-1", "type": "event", "source": "t", "data": {}}
    celery_app.send_task(PROCESS_TASK, args=[envelope], task_id="wire-1", queue="wire-check",
                         headers={"correlationid": "wire-1"})
    theirs = json.loads(redis_client.rpop("wire-check"))
    ours = json.loads(direct._submitter.publisher.redis_message(
        Outgoing("wire-1", envelope, "wire-check")))
    assert ours.keys() == theirs.keys()
    assert ours["content-type"] == theirs["content-type"] == "application/json"
    assert ours["headers"].keys() == theirs["headers"].keys()
    for header in ("lang", "task", "id", "root_id", "parent_id", "retries", "eta", "expires",
                   "correlationid"):
        assert ours["headers"][header] == theirs["headers"][header]
    assert ours["properties"].keys() == theirs["properties"].keys()
    assert ours["properties"]["delivery_info"] == theirs["properties"]["delivery_info"]
    decode = lambda m: json.loads(base64.b64decode(m["body"]))  # noqa: E731
    assert decode(ours) == decode(theirs)
    # A caused message carries its chain's id in the Celery headers too.
    caused = json.loads(direct._submitter.publisher.redis_message(
        Outgoing("wire-2", {**envelope, "id": "wire-2", "correlationid": "chain-7"}, "q")))
    assert caused["headers"]["correlationid"] == "chain-7"


class _Tripwire:
    """Unpickling this creates a file: proof that a worker deserialized pickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_a_pickled_message_in_the_broker_is_never_executed(
    celery_app: Celery, direct: Client, worker: Any, tmp_path: Any
) -> None:
    """JSON only: a pickle pushed straight into a queue is refused, not deserialized."""
    import pickle

    tripwire = tmp_path / "unpickled"
    with celery_app.producer_or_acquire() as producer:
        producer.publish(
            pickle.dumps(([_Tripwire(str(tripwire))], {}, {})),
            routing_key="event", exchange="", content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={"lang": "py", "task": PROCESS_TASK, "id": "pickled-1",
                     "argsrepr": "", "kwargsrepr": ""},
        )
    # A JSON message behind it in the same queue is processed; by then the pickle was seen.
    after = direct.submit("event", {"after": True}, source="t")
    assert final(direct, after)["status"] == "succeeded"
    assert not tripwire.exists()
    assert direct.status("pickled-1") is None
    wait_for(lambda: "Refusing to deserialize untrusted content of type pickle"
             in worker.log_path.read_text(errors="replace"), message="the worker's refusal")
