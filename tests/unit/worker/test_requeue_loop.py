"""The requeue/outbox loop stops cleanly: it finishes the pass under way and starts no other."""

from __future__ import annotations

import threading
import time

from integration.worker.requeue import RequeueLoop


class Pass:
    """A pass that takes ``seconds`` and reports a full batch while ``backlog`` is set."""

    batch = 10

    def __init__(self, seconds: float, backlog: bool = False) -> None:
        self.seconds, self.backlog = seconds, backlog
        self.started = threading.Event()
        self.runs = self.finished = 0

    def run_once(self) -> int:
        self.runs += 1
        self.started.set()
        time.sleep(self.seconds)
        self.finished += 1
        return self.batch if self.backlog else 0


def test_stop_waits_for_the_pass_under_way() -> None:
    """``stop`` returns once the running pass has finished, and no pass starts after it."""
    work = Pass(0.3)
    loop = RequeueLoop([work, Pass(0)], interval=0.01)
    loop.start()
    assert work.started.wait(5)
    assert loop.stop(timeout=5) is True
    assert not loop.is_alive()
    assert work.finished == work.runs, "no pass was cut off"
    runs = work.runs
    time.sleep(0.1)
    assert work.runs == runs


def test_stop_ends_an_endless_backlog_between_batches() -> None:
    """A pass that always finds a full batch does not keep the loop from stopping."""
    work = Pass(0.01, backlog=True)
    loop = RequeueLoop([work], interval=0.01)
    loop.start()
    assert work.started.wait(5)
    started = time.monotonic()
    assert loop.stop(timeout=5) is True
    assert time.monotonic() - started < 1
    assert work.finished == work.runs


def test_stop_reports_a_pass_that_outlasts_the_timeout() -> None:
    """A pass longer than the timeout makes ``stop`` say so instead of hanging."""
    work = Pass(1.0)
    loop = RequeueLoop([work], interval=0.01)
    loop.start()
    assert work.started.wait(5)
    assert loop.stop(timeout=0.1) is False
    loop.join(5)
    assert work.finished == work.runs
