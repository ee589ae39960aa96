"""Failure isolation: what an entry accepts, the store and the broker write; anything else is a
4xx for its own sender; a shared flush fails each caller for its own reason; a batch is
answered per item and is never half done behind a 500."""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integration.app import build_submitter
from integration.broker.submission import Accepted, Result, Submitter
from integration.messages.envelope import Envelope
from integration.messages.jsonlimits import loads
from integration.messages.problems import InvalidMessage, Unavailable
from integration.ops.embedded_redis import EmbeddedRedis
from integration.settings import Settings
from tests.conftest import configured

#: A JSON string holding a lone surrogate, as a sender writes it (the escape, in ASCII).
LONE = '"\\ud800"'


def event(data: str = '{"n": 1}', **attributes: str) -> str:
    """An ``event`` message as JSON text; ``attributes`` are JSON texts too."""
    extra = "".join(f', "{name}": {value}' for name, value in attributes.items())
    return f'{{"type": "event", "source": "isolation"{extra}, "data": {data}}}'


# -- one rule at every entry -------------------------------------------------------------------

#: Data whose value, or key, is such a string.
LONE_VALUE = f'{{"x": {LONE}}}'
LONE_KEY = f"{{{LONE}: 1}}"
ALERTMANAGER = ('{"version": "4", "status": "firing", "receiver": "r", "groupKey": "g", '
                '"alerts": [{"status": "firing", "labels": {"alertname": ' + LONE + '}, '
                '"annotations": {}, "startsAt": "2026-01-01T00:00:00Z", "fingerprint": "f"}]}')
SCHEDULE = '{"name": "isolation", "every": 60, "type": "event", "data": ' + LONE_VALUE + "}"
CE = {"specversion": '"1.0"', "id": '"ce-isolation"'}
CE_BINARY = {"ce-specversion": "1.0", "ce-id": "ce-binary-isolation",
             "ce-source": "isolation", "ce-type": "event"}
#: (path, body, headers, where the problem is, the location it names)
ENTRIES = {
    "rest": ("/api/v1/messages", event(LONE_VALUE), {}, (), ["data", "x"]),
    "rest extension": ("/api/v1/messages", event(ext=LONE), {}, (), ["ext"]),
    "rest key": ("/api/v1/messages", event(LONE_KEY), {}, (), ["data", "\\ud800"]),
    "rest batch": ("/api/v1/messages", f"[{event()}, {event(LONE_VALUE)}]", {},
                   ("results", 1, "problem"), [1, "data", "x"]),
    "cloudevents structured": ("/api/v1/messages", event(LONE_VALUE, **CE),
                               {"Content-Type": "application/cloudevents+json"}, (),
                               ["data", "x"]),
    "cloudevents batch": ("/api/v1/messages", f"[{event(LONE_KEY, **CE)}]",
                          {"Content-Type": "application/cloudevents-batch+json"},
                          ("results", 0, "problem"), [0, "data", "\\ud800"]),
    "cloudevents binary": ("/api/v1/messages", LONE_VALUE, CE_BINARY, (), ["body", "x"]),
    "alertmanager": ("/api/v1/alertmanager", ALERTMANAGER, {}, (),
                     ["alerts", 0, "labels", "alertname"]),
    "schedule": ("/api/v1/schedules", SCHEDULE, {}, (), ["data", "x"]),
}


@pytest.mark.parametrize("entry", ENTRIES)
def test_every_entry_refuses_text_the_store_cannot_write_with_422_naming_the_field(
        client: FlaskClient, auth: dict[str, str], entry: str) -> None:
    """A lone surrogate is a 422 problem that names its field, at every HTTP entry."""
    path, body, headers, where, loc = ENTRIES[entry]
    response = client.post(path, data=body.encode(),
                           headers={**auth, "Content-Type": "application/json", **headers})
    assert response.status_code in (202, 422), response.get_data(as_text=True)
    problem = response.get_json()
    for step in where:
        problem = problem[step]
    assert problem["status"] == 422
    assert [(e["loc"], e["type"]) for e in problem["errors"]] == [(loc, "string_unicode")]


# -- every JSON document: stored unchanged, or refused with a 4xx ------------------------------

#: Text of any code point; some with lone surrogates, which ``st.text`` leaves out.
TEXT = st.one_of(st.text(max_size=5), st.lists(st.one_of(
    st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF,
                                   categories=["Cs"])), max_size=5).map("".join))
#: Numbers as a sender may write them: past a double or int64, underflowing, NaN.
NUMBERS = st.one_of(
    st.integers().map(str), st.integers(-(2**64), 2**64).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e400", "-1e400", "1e-400", "-0", "-0.0", "5e-324", "NaN",
                     "Infinity", "-Infinity", "9223372036854775807", "9223372036854775808",
                     "-9223372036854775808", "18446744073709551616", "1" * 40, "2.5e-308"]))
SCALARS = st.one_of(st.sampled_from(["null", "true", "false"]), NUMBERS,
                    TEXT.map(json.dumps))  # json.dumps writes a lone surrogate as its escape


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}"


def _nested(document: str, depth: int) -> str:
    return "[" * depth + document + "]" * depth


#: JSON texts: small trees of any scalars, and some nested around the depth limit.
DOCUMENTS = st.one_of(
    st.recursive(SCALARS, lambda children: st.one_of(
        st.lists(children, max_size=4).map(_array),
        st.lists(st.tuples(TEXT, children), max_size=4).map(_object)), max_leaves=16),
    st.builds(_nested, SCALARS, st.integers(min_value=25, max_value=40)))


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types all the way down (``1 == 1.0`` is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return False  # never accepted, so never compared
    return bool(a == b)


@pytest.fixture
def own_store(make_app: Callable[..., Flask], private_redis: EmbeddedRedis
              ) -> Iterator[tuple[FlaskClient, redis.Redis]]:
    """A gateway on a Redis of the test's own (store and broker): no worker takes its
    messages, so each one is read from its queue as the worker would get it."""
    control = redis.Redis(port=private_redis.port)
    yield make_app(redis_url=private_redis.url).test_client(), control
    control.close()


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.one_of(SCALARS, DOCUMENTS),
       where=st.sampled_from(["data", "extension", "subject"]), batched=st.booleans())
def test_any_json_document_is_stored_and_enqueued_unchanged_or_refused_with_a_4xx(
        own_store: tuple[FlaskClient, redis.Redis], auth: dict[str, str], document: str,
        where: str, batched: bool) -> None:
    """Accepted: the status record and the broker message hold what the gateway parsed;
    refused: a 4xx; never a 500, alone or in a batch."""
    client, control = own_store
    message = {"data": event(f'{{"doc": {document}}}'),
               "extension": event(doc=document),
               "subject": event(subject=document)}[where]
    body = f"[{message}]" if batched else message
    response = client.post("/api/v1/messages", data=body.encode(),
                           headers={**auth, "Content-Type": "application/json"})
    answer = response.get_json()
    status = answer["results"][0]["status"] if batched and "results" in answer \
        else response.status_code
    assert status == 202 or 400 <= status < 500, answer
    if status != 202:
        assert control.llen("event") == 0
        return
    parsed = loads(body.encode())
    sent = (parsed[0] if batched else parsed)
    key = "doc" if where == "extension" else where
    expected = sent["data"]["doc"] if where == "data" else sent[key]
    message_id = answer["results"][0]["id"] if batched else answer["id"]
    record = json.loads(control.hget(f"integration:msg:{message_id}", "envelope") or b"{}")
    broker = json.loads(control.rpop("event") or b"{}")
    [[envelope], _, _] = json.loads(base64.b64decode(broker["body"]))
    for stored in (record, envelope):
        # (A null subject is an absent one: the envelope leaves out unset attributes.)
        assert same(stored["data"]["doc"] if where == "data" else stored.get(key), expected)


# -- a shared flush fails each caller for its own reason ----------------------------------------

@pytest.fixture
def coalescing(settings: Settings, private_redis: EmbeddedRedis) -> Submitter:
    """A gateway's submit path (coalescing, chunks of two) on a Redis of the test's own."""
    return build_submitter(configured(settings, redis_url=private_redis.url,
                                      publish_chunk_size=2), origin="test", coalesce=100)


def shared_flush(submitter: Submitter, envelopes: Sequence[Envelope]) -> list[Result]:
    """Each envelope submitted by a caller of its own; the first caller's flush is held
    until the others queue behind it, in order, so that they share the next flush."""
    assert submitter.coalescer is not None
    coalescer = submitter.coalescer
    flushing, release = threading.Event(), threading.Event()
    real = coalescer._flush
    calls = 0

    def held_first(requests: Sequence[Any]) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            flushing.set()
            assert release.wait(10)
        return real(requests)

    coalescer._flush = held_first  # type: ignore[method-assign]
    results: list[Result | None] = [None] * len(envelopes)

    def submit(index: int) -> None:
        [results[index]] = submitter.submit([envelopes[index]], owner=f"caller-{index}",
                                            channel="rest")

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(envelopes))]
    threads[0].start()
    assert flushing.wait(10)
    for queued, thread in enumerate(threads[1:], start=1):
        thread.start()
        deadline = time.monotonic() + 10
        while len(coalescer._waiting) < queued:
            assert time.monotonic() < deadline, "a caller did not queue behind the flush"
            time.sleep(0.002)
    release.set()
    for thread in threads:
        thread.join(10)
    return [r for r in results if r is not None]


def envelope(**data: Any) -> Envelope:
    return Envelope.model_validate({"type": "event", "source": "isolation", "data": data})


def test_a_message_the_store_cannot_write_is_refused_alone_in_a_shared_flush(
        coalescing: Submitter, private_redis: EmbeddedRedis) -> None:
    """A message built by code with a lone surrogate (no parser saw it) gets its own 422;
    the callers it shared a flush with are all enqueued."""
    envelopes = [envelope(n=n) for n in range(6)]
    envelopes[3] = envelope(x="\ud800")
    results = shared_flush(coalescing, envelopes)
    refused = results.pop(3)
    assert isinstance(refused, InvalidMessage)
    assert refused.extensions["errors"][0]["loc"] == ["data", "x"]
    assert all(isinstance(r, Accepted) for r in results)
    control = redis.Redis(port=private_redis.port)
    assert control.llen("event") == 5
    assert not control.exists(f"integration:msg:{envelopes[3].id}")
    control.close()


def test_a_broker_failing_midway_answers_each_caller_by_whether_its_message_was_written(
        coalescing: Submitter, private_redis: EmbeddedRedis) -> None:
    """The Redis fills during a shared flush of two chunks: the callers of the written chunk
    get 202, those of the refused chunk 503 and no record."""
    control = redis.Redis(port=private_redis.port)
    coalescing.submit([envelope(n=-1)], owner="warm", channel="rest")  # scripts, indexes
    control.delete("event")
    # While a chunk is queued its command sits in Redis's query buffer, which grows to twice
    # its size: room for about twice a chunk lets the first in, and what it writes leaves
    # none for the second.
    control.config_set("maxmemory", int(control.info("memory")["used_memory"]) + 1000 * 1024)
    envelopes = [envelope(n=0), *(envelope(n=n, pad="p" * 100_000) for n in range(1, 5))]
    results = shared_flush(coalescing, envelopes)
    # The first caller's flush, then the shared one: [1, 2] written, [3, 4] refused.
    assert [type(r) for r in results] == [Accepted, Accepted, Accepted, Unavailable,
                                          Unavailable]
    assert control.llen("event") == 3
    for refused in envelopes[3:]:
        assert not control.exists(f"integration:msg:{refused.id}")
    control.close()


# -- a batch is answered per item, and a retry enqueues nothing twice ---------------------------

def test_a_batch_with_an_unwritable_item_enqueues_the_rest_and_a_retry_enqueues_nothing(
        own_store: tuple[FlaskClient, redis.Redis], auth: dict[str, str]) -> None:
    """150 items, a lone surrogate at 120 (in the second chunk): 202 with that item's 422;
    the same batch again with the same Idempotency-Key gets the same answer, and the queue
    holds each accepted message once."""
    client, control = own_store
    items = [event(f'{{"n": {n}}}') for n in range(150)]
    items[120] = event(f'{{"n": {LONE}}}')
    body = ("[" + ",".join(items) + "]").encode()
    headers = {**auth, "Content-Type": "application/json", "Idempotency-Key": "batch-150"}
    first = client.post("/api/v1/messages", data=body, headers=headers)
    assert first.status_code == 202
    results = first.get_json()["results"]
    assert [r["status"] for r in results] == [202] * 120 + [422] + [202] * 29
    assert results[120]["problem"]["errors"][0]["loc"] == [120, "data", "n"]
    again = client.post("/api/v1/messages", data=body, headers=headers)
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert control.llen("event") == 149


def test_a_batch_cut_short_by_a_full_store_answers_per_item_and_a_retry_enqueues_nothing(
        make_app: Callable[..., Flask], private_redis: EmbeddedRedis,
        auth: dict[str, str]) -> None:
    """The Redis (store and broker) fills midway: the written items are 202, the rest 503,
    never a 500 although the answer cannot be stored under the key; a retry with the same
    key enqueues nothing, even once there is room again."""
    client = make_app(redis_url=private_redis.url, publish_chunk_size=20).test_client()
    control = redis.Redis(port=private_redis.port)
    headers = {**auth, "Idempotency-Key": "full-store"}
    assert client.post("/api/v1/messages", json=json.loads(event()),
                       headers=auth).status_code == 202  # scripts and indexes in place
    control.delete("event")
    control.config_set("maxmemory", int(control.info("memory")["used_memory"]) + 512 * 1024)
    batch = [json.loads(event(json.dumps({"n": n, "pad": "p" * 900}))) for n in range(400)]
    first = client.post("/api/v1/messages", json=batch, headers=headers)
    assert first.status_code == 202
    statuses = [r["status"] for r in first.get_json()["results"]]
    written = statuses.count(202)
    assert 0 < written < 400
    assert statuses == [202] * written + [503] * (400 - written)
    assert control.llen("event") == written
    retried_while_full = client.post("/api/v1/messages", json=batch, headers=headers)
    control.config_set("maxmemory", 0)
    retried = client.post("/api/v1/messages", json=batch, headers=headers)
    assert retried_while_full.status_code == 503
    assert retried.status_code == 409  # the key still holds the first request, unanswered
    assert control.llen("event") == written
    control.close()
