"""A request that fills a coalesced flush by itself (a full batch) is flushed on its own:
it does not wait for the flush in progress in its process, and smaller requests still
share flushes."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from integration.app import build_submitter
from integration.broker.submission import Accepted, Result, Submitter
from integration.messages.envelope import Envelope
from integration.ops.embedded_redis import EmbeddedRedis
from integration.settings import Settings
from tests.conftest import configured

LIMIT = 4  # messages per coalesced flush


@pytest.fixture
def submitter(settings: Settings, private_redis: EmbeddedRedis) -> Submitter:
    return build_submitter(configured(settings, redis_url=private_redis.url), origin="test",
                           coalesce=LIMIT)


def events(count: int) -> list[Envelope]:
    return [Envelope.model_validate({"type": "event", "source": "test", "data": {"n": n}})
            for n in range(count)]


def test_a_full_batch_does_not_wait_for_the_flush_in_progress(
        submitter: Submitter, monkeypatch: pytest.MonkeyPatch) -> None:
    flushing, release = threading.Event(), threading.Event()
    flushed: list[int] = []
    real = submitter._submit_together

    def held_while_single(requests: Sequence[Any]) -> list[list[Result]]:
        flushed.append(sum(len(r.envelopes) for r in requests))
        if len(requests[0].envelopes) == 1:  # the flush in progress: held until released
            flushing.set()
            assert release.wait(10)
        return real(requests)

    assert submitter.coalescer is not None
    monkeypatch.setattr(submitter.coalescer, "_flush", held_while_single)
    monkeypatch.setattr(submitter, "_submit_together", held_while_single)

    single: list[Result] = []
    leader = threading.Thread(target=lambda: single.extend(
        submitter.submit(events(1), owner="o", channel="rest")))
    leader.start()
    assert flushing.wait(10)
    batch: list[Result] = []
    full = threading.Thread(target=lambda: batch.extend(
        submitter.submit(events(LIMIT), owner="o", channel="rest")))
    full.start()
    full.join(5)
    finished_while_held = not full.is_alive()
    release.set()
    leader.join(10)
    full.join(10)
    assert finished_while_held, "the full batch waited for the single message's flush"
    assert all(isinstance(r, Accepted) for r in batch) and len(batch) == LIMIT
    assert len(single) == 1 and isinstance(single[0], Accepted)
    assert sorted(flushed) == [1, LIMIT]


def test_smaller_requests_still_share_a_flush(submitter: Submitter,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    flushing, release = threading.Event(), threading.Event()
    flushed: list[int] = []
    real = submitter._submit_together

    def first_held(requests: Sequence[Any]) -> list[list[Result]]:
        flushed.append(sum(len(r.envelopes) for r in requests))
        if len(flushed) == 1:
            flushing.set()
            assert release.wait(10)
        return real(requests)

    assert submitter.coalescer is not None
    monkeypatch.setattr(submitter.coalescer, "_flush", first_held)
    results: list[list[Result]] = [[], [], []]
    threads = [threading.Thread(target=lambda i=i, n=n: results[i].extend(
        submitter.submit(events(n), owner="o", channel="rest")))
        for i, n in enumerate((1, 1, LIMIT - 1))]
    threads[0].start()
    assert flushing.wait(10)
    for thread in threads[1:]:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(10)
    assert [len(r) for r in results] == [1, 1, LIMIT - 1]
    assert all(isinstance(x, Accepted) for r in results for x in r)
    # The first flush alone; the two that waited behind it fill the next one, or two.
    assert flushed[0] == 1 and sum(flushed) == LIMIT + 1
