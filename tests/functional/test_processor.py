"""The processor against the real store: redeliveries, handler failures, records."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import BaseModel

from integration.messages.registry import MessageType, Registry
from integration.messages.retry import PermanentError, RetryPolicy, TransientError
from integration.messages.status import Status
from integration.settings import Settings
from integration.store.records import StatusStore, store_from_settings
from integration.worker.processor import Delivery, Processor


class Count(BaseModel):
    n: int


@pytest.fixture
def store(settings: Settings) -> StatusStore:
    return store_from_settings(settings)


def test_a_redelivered_finished_message_is_not_run_again(store: StatusStore) -> None:
    """A second delivery of a succeeded message is skipped: the effect happens once."""
    calls: list[int] = []

    def count(payload: Count, envelope: Any) -> dict[str, int]:
        calls.append(payload.n)
        return {"n": payload.n}

    processor = Processor(Registry([MessageType("count", Count, count)]), store)
    envelope = {"id": "redelivered-1", "type": "count", "source": "t", "data": {"n": 1}}
    assert processor.process(envelope, Delivery("t1", "count")).status is Status.SUCCEEDED
    assert processor.process(envelope, Delivery("t1", "count", redelivered=True)).status \
        is Status.SUCCEEDED
    assert calls == [1]
    record = store.get("redelivered-1")
    assert record is not None and record["attempts"] == 1


def test_a_permanent_failure_ends_dead_at_once(store: StatusStore) -> None:
    def explode(payload: Count, envelope: Any) -> None:
        raise PermanentError("downstream said no")

    processor = Processor(Registry([MessageType("boom", Count, explode)]), store)
    envelope = {"id": "boom-1", "type": "boom", "source": "t", "data": {"n": 1}}
    assert processor.process(envelope, Delivery("t2", "boom")).status is Status.DEAD
    record = store.get("boom-1")
    assert record is not None
    assert record["error"]["type"] == "PermanentError"
    assert record["error"]["kind"] == "permanent"
    assert record["attempts"] == 1
    assert "downstream said no" in record["error"]["message"]
    assert "traceback" not in record["error"], "tracebacks go to the worker's log only"
    assert record["topic"] == "boom.dead"


def test_an_invalid_delivery_does_not_overwrite_a_finished_message(store: StatusStore) -> None:
    processor = Processor(Registry([MessageType("count", Count, lambda p, e: {})]), store)
    good = {"id": "finished-1", "type": "count", "source": "t", "data": {"n": 1}}
    assert processor.process(good, Delivery("t3")).status is Status.SUCCEEDED
    bad = {"id": "finished-1", "type": "count", "data": {"n": "one"}}
    assert processor.process(bad, Delivery("t4")).status is Status.SUCCEEDED
    record = store.get("finished-1")
    assert record is not None and record["status"] == "succeeded"


def test_discard_removes_only_the_records_of_its_own_request(store: StatusStore) -> None:
    """A failed submission cleans up after itself and never removes another request's record."""
    from integration.store.model import NewRecord

    record = NewRecord(id="discard-1", type="event", queue="event", envelope={}, owner="o",
                       channel="rest")
    assert store.create_many([record], request="first") == [True]
    store.discard_many([record], request="second")
    assert store.get("discard-1") is not None
    store.discard_many([record], request="first")
    assert store.get("discard-1") is None
    assert store.create_many([record], request="third") == [True]


def test_ids_that_look_like_key_suffixes_do_not_collide(store: StatusStore) -> None:
    from integration.store.model import NewRecord

    for message_id in ("zz:history", "zz", "hist:zz"):
        record = NewRecord(id=message_id, type="event", queue="event", envelope={},
                           owner="o", channel="rest")
        assert store.create_many([record]) == [True]
    for message_id in ("zz:history", "zz", "hist:zz"):
        found = store.get(message_id)
        assert found is not None and found["id"] == message_id
        assert [h["status"] for h in found["history"]] == ["accepted"]


def test_a_transient_failure_is_retried_then_dead_when_attempts_run_out(
    store: StatusStore
) -> None:
    """The status says retrying, with the attempt, the error and when the next one is due."""
    def flaky(payload: Count, envelope: Any) -> None:
        raise TransientError("timeout talking to the target")

    policy = RetryPolicy(max_attempts=2, base_delay_seconds=30, jitter=False)
    processor = Processor(Registry([MessageType("flaky", Count, flaky, retry=policy)]), store)
    envelope = {"id": "retry-1", "type": "flaky", "source": "t", "data": {"n": 1}}

    assert processor.process(envelope, Delivery("t5")).status is Status.RETRYING
    record = store.get("retry-1")
    assert record is not None
    assert record["status"] == "retrying" and record["attempts"] == 1
    assert record["last_error"]["message"] == "timeout talking to the target"
    assert record["next_attempt_at"]
    due = store.client.zscore(store.due_key, "retry-1")
    assert due is not None and due > time.time() * 1000 + 25_000  # parked, not in the broker

    assert processor.process(envelope, Delivery("t6")).status is Status.DEAD
    record = store.get("retry-1")
    assert record is not None and record["attempts"] == 2
    assert record["error"]["exhausted"] == "2 of 2 attempts failed"
    errors = [h["error"]["message"] for h in record["history"] if isinstance(h.get("error"), dict)]
    assert len(errors) == 2, "every attempt's error is kept"
