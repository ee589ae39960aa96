"""Leader/follower batching: concurrent callers in one process share one flush.

The first caller to arrive leads: it flushes everything waiting (itself included) in one
call, answers each follower with its own part of the result, then hands the lead to a caller
that arrived meanwhile. Nobody waits for a timer: while the leader's flush is on the wire,
the requests that become ready queue up behind it and form the next batch, so batches grow
with the load and a lone caller pays no delay. Built on ``threading`` primitives, which
gunicorn's gevent worker monkey-patches into greenlet-aware ones, so the same code serves
greenlets and threads.

Sharing a flush must not share a failure: a flush answers each item for itself (an item it
cannot handle gets its own answer), and with ``isolate`` a flush that raises all the same is
run again by each caller for its own item alone, so an exception reaches only the callers
whose own item raises it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


@dataclass(eq=False)
class _Waiter(Generic[Item, Answer]):
    item: Item
    size: int
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    answer: Answer | None = None
    error: BaseException | None = None
    #: The shared flush raised: this caller flushes its item again, on its own.
    alone: bool = False


class Coalescer(Generic[Item, Answer]):
    """Runs ``flush(items) -> answers`` (one answer per item, in order) for batches of
    concurrent ``run(item)`` calls; a batch holds at most ``max_size`` units (an item's size
    is ``size_of(item)``; one item larger than that is flushed alone, never split).

    ``isolate`` is for a flush that is safe to run again for an item after it raised (one
    that raises before it writes anything, or whose writes are recognised when repeated):
    a batch's exception is then never handed to the callers of the other items."""

    def __init__(self, flush: Callable[[Sequence[Item]], Sequence[Answer]], *, max_size: int,
                 size_of: Callable[[Item], int] = lambda _: 1, isolate: bool = False) -> None:
        self._flush = flush
        self.max_size = max_size
        self._size_of = size_of
        self._isolate = isolate
        self._lock = threading.Lock()
        self._waiting: list[_Waiter[Item, Answer]] = []
        self._leading = False

    def run(self, item: Item) -> Answer:
        """``flush``'s answer for ``item``, flushed together with concurrent callers' items;
        ``flush``'s exception if it raised for the batch (with ``isolate``: for this item
        flushed alone)."""
        waiter: _Waiter[Item, Answer] = _Waiter(item, self._size_of(item))
        with self._lock:
            self._waiting.append(waiter)
            waiter.lead = not self._leading
            self._leading = True
        if not waiter.lead:
            waiter.wake.wait()
        if waiter.lead:
            self._lead(waiter)
        if waiter.alone:
            # Outside the lead: the other callers' flushes go on meanwhile.
            return self._answers([item])[0]
        if waiter.error is not None:
            raise waiter.error
        return waiter.answer  # type: ignore[return-value]

    def _answers(self, items: Sequence[Item]) -> Sequence[Answer]:
        answers = self._flush(items)
        if len(answers) != len(items):
            raise RuntimeError(f"flush answered {len(answers)} of {len(items)} items")
        return answers

    def _lead(self, leader: _Waiter[Item, Answer]) -> None:
        with self._lock:
            batch: list[_Waiter[Item, Answer]] = []
            size = 0
            for waiter in self._waiting:
                if batch and size + waiter.size > self.max_size:
                    break
                batch.append(waiter)
                size += waiter.size
            del self._waiting[:len(batch)]
        try:
            for waiter, answer in zip(batch, self._answers([w.item for w in batch]),
                                      strict=True):
                waiter.answer = answer
        except BaseException as exc:  # noqa: BLE001 - answered below, caller by caller
            if self._isolate and len(batch) > 1:
                for waiter in batch:
                    waiter.alone = True
                if not isinstance(exc, Exception):  # the leader was interrupted: only it
                    leader.alone, leader.error = False, exc
            else:
                for waiter in batch:
                    waiter.error = exc
        finally:
            with self._lock:
                successor = self._waiting[0] if self._waiting else None
                self._leading = successor is not None
            for waiter in batch:
                waiter.lead = False
                waiter.wake.set()
            if successor is not None:
                successor.lead = True
                successor.wake.set()
