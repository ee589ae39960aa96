"""The coalescer: concurrent callers share flushes, each gets its own answer or error."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from integration.broker.coalescer import Coalescer


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


class Failing:
    """A flush that raises ``error`` for a batch that ``fails``, and holds its first call
    until released, so that the callers behind it share the next flush."""

    def __init__(self, fails: Callable[[Sequence[int]], bool], error: BaseException) -> None:
        self.fails = fails
        self.error = error
        self.flushing = threading.Event()
        self.release = threading.Event()
        self.batches: list[list[int]] = []
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[int]) -> list[str]:
        with self.lock:
            self.batches.append(list(items))
            first = len(self.batches) == 1
        if first:
            self.flushing.set()
            assert self.release.wait(10)
        if self.fails(items):
            raise self.error
        return [f"answer-{i}" for i in items]


def shared_flush_outcomes(flush: Failing, callers: int, isolate: bool
                          ) -> dict[int, str | BaseException]:
    """Each caller's answer or exception; caller 0 leads a flush the others queue behind,
    so that callers 1.. share the next one."""
    coalescer: Coalescer[int, str] = Coalescer(flush, max_size=100, isolate=isolate)
    outcomes: dict[int, str | BaseException] = {}

    def call(item: int) -> None:
        try:
            outcomes[item] = coalescer.run(item)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertions
            outcomes[item] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    threads[0].start()
    assert flush.flushing.wait(10)
    for thread in threads[1:]:
        thread.start()
    deadline = time.monotonic() + 10
    while len(coalescer._waiting) < callers - 1:
        assert time.monotonic() < deadline, "callers did not queue behind the flush"
        time.sleep(0.005)
    flush.release.set()
    for thread in threads:
        thread.join(10)
    assert sorted(flush.batches[1]) == list(range(1, callers))
    return outcomes


def test_an_isolated_flush_that_raises_fails_only_the_caller_whose_item_raises() -> None:
    """With ``isolate``, each caller of a failed shared flush is flushed again alone: the
    poisoned item's caller gets the exception, the others their answers."""
    flush = Failing(lambda items: 3 in items, ValueError("item 3 cannot be written"))
    outcomes = shared_flush_outcomes(flush, callers=6, isolate=True)
    assert isinstance(outcomes.pop(3), ValueError)
    assert outcomes == {i: f"answer-{i}" for i in (0, 1, 2, 4, 5)}


def test_without_isolation_a_failed_flush_fails_its_whole_batch() -> None:
    """A flush that is not safe to repeat keeps sharing a batch's exception."""
    flush = Failing(lambda items: 3 in items, ValueError("batch failed"))
    outcomes = shared_flush_outcomes(flush, callers=4, isolate=False)
    assert outcomes[0] == "answer-0"
    assert all(isinstance(outcomes[i], ValueError) for i in (1, 2, 3))


class Interrupted(BaseException):
    """Stands for a leader's greenlet being killed during a flush."""


def test_an_interrupted_leader_ends_only_its_own_call() -> None:
    """A leader interrupted during a shared flush raises alone; its followers are flushed
    again on their own and answered."""
    flush = Failing(lambda items: len(items) > 1, Interrupted())
    outcomes = shared_flush_outcomes(flush, callers=4, isolate=True)
    leader = flush.batches[1][0]
    assert isinstance(outcomes.pop(leader), Interrupted)
    assert outcomes == {i: f"answer-{i}" for i in range(4) if i != leader}
