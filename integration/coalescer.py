"""Leader/follower batching: concurrent callers in one process share one flush.

The first caller to arrive leads: it flushes everything waiting (itself included) in one
call, answers each follower with its own part of the result, then hands the lead to a caller
that arrived meanwhile. Nobody waits for a timer: while the leader's flush is on the wire,
the requests that become ready queue up behind it and form the next batch, so batches grow
with the load and a lone caller pays no delay. Built on ``threading`` primitives, which
gunicorn's gevent worker monkey-patches into greenlet-aware ones, so the same code serves
greenlets and threads.
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


class Coalescer(Generic[Item, Answer]):
    """Runs ``flush(items) -> answers`` (one answer per item, in order) for batches of
    concurrent ``run(item)`` calls; a batch holds at most ``max_size`` units (an item's size
    is ``size_of(item)``; one item larger than that is flushed alone, never split)."""

    def __init__(self, flush: Callable[[Sequence[Item]], Sequence[Answer]], *, max_size: int,
                 size_of: Callable[[Item], int] = lambda _: 1) -> None:
        self._flush = flush
        self.max_size = max_size
        self._size_of = size_of
        self._lock = threading.Lock()
        self._waiting: list[_Waiter[Item, Answer]] = []
        self._leading = False

    def run(self, item: Item) -> Answer:
        """``flush``'s answer for ``item``, flushed together with concurrent callers' items;
        ``flush``'s exception if it raised for the batch."""
        waiter: _Waiter[Item, Answer] = _Waiter(item, self._size_of(item))
        with self._lock:
            self._waiting.append(waiter)
            waiter.lead = not self._leading
            self._leading = True
        if not waiter.lead:
            waiter.wake.wait()
        if waiter.lead:
            self._lead()
        if waiter.error is not None:
            raise waiter.error
        return waiter.answer  # type: ignore[return-value]

    def _lead(self) -> None:
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
            answers = self._flush([w.item for w in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"flush answered {len(answers)} of {len(batch)} items")
            for waiter, answer in zip(batch, answers, strict=True):
                waiter.answer = answer
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets it
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
