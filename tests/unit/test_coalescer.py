"""The coalescer: concurrent callers share flushes, each gets its own answer or error."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from integration.coalescer import Coalescer


class Recorder:
    """A flush that takes a while (like a round trip) and remembers every batch."""

    def __init__(self, seconds: float = 0.01, fail_on: int | None = None) -> None:
        self.seconds = seconds
        self.fail_on = fail_on
        self.batches: list[list[int]] = []
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[int]) -> list[str]:
        with self.lock:
            self.batches.append(list(items))
        time.sleep(self.seconds)
        if self.fail_on is not None and self.fail_on in items:
            raise ConnectionError(f"batch with {self.fail_on} failed")
        return [f"answer-{i}" for i in items]


def test_each_concurrent_caller_gets_its_own_answer_from_shared_flushes() -> None:
    """Forty concurrent callers are answered correctly by fewer flushes than callers."""
    flush = Recorder()
    coalescer: Coalescer[int, str] = Coalescer(flush, max_size=100)
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(coalescer.run, range(40)))
    assert answers == [f"answer-{i}" for i in range(40)]
    assert sorted(i for batch in flush.batches for i in batch) == list(range(40))
    assert len(flush.batches) < 40


def test_a_lone_caller_is_flushed_at_once() -> None:
    """Without concurrent callers there is no waiting for company."""
    flush = Recorder(seconds=0)
    coalescer: Coalescer[int, str] = Coalescer(flush, max_size=100)
    started = time.perf_counter()
    assert coalescer.run(7) == "answer-7"
    assert time.perf_counter() - started < 0.5
    assert flush.batches == [[7]]


def test_a_failed_flush_fails_only_its_own_batch() -> None:
    """Callers in the failing batch get its exception; later batches still succeed."""
    flush = Recorder(fail_on=0)
    coalescer: Coalescer[int, str] = Coalescer(flush, max_size=100)
    with pytest.raises(ConnectionError):
        coalescer.run(0)
    assert coalescer.run(1) == "answer-1"


def test_batches_respect_the_size_limit_without_splitting_an_item() -> None:
    """Items weigh their size; a batch never exceeds the limit unless one item alone does."""
    flush = Recorder()
    coalescer: Coalescer[int, str] = Coalescer(flush, max_size=10, size_of=lambda i: i)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(coalescer.run, [3] * 20 + [25]))
    assert answers == ["answer-3"] * 20 + ["answer-25"]
    for batch in flush.batches:
        assert sum(batch) <= 10 or batch == [25]
