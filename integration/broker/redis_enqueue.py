"""Record and enqueue in one transaction, for a broker on the status store's Redis database
(decision 0004): each chunk's records are created already ``queued`` and their Celery
messages pushed onto the broker's lists by one Lua script, so a message is in the queue if
and only if its record exists.

It serves the broker, so it lives here; the record's keys, fields and history entries are the
store's (``Keys``, ``history_entry``, ``StoreCore.cause_links``), taken from it. A request's
rate-limit hit can ride in the same script (decision 0011): its keys and limit come from the
gateway's rate-limit module, the counting is the ``limits`` library's own scripts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from limits.storage import RedisStorage

from integration.messages.status import Status
from integration.store.codec import history_entry, iso, now_ms
from integration.store.connections import execute_loading, own_connections
from integration.store.core import StoreCore
from integration.store.model import EarlierAnswer, IdempotentAnswer, NewRecord
from integration.store.scripts import lua

#: The script's parts: files of ``integration/broker/lua/``, after ``rate_limit_part()``.
ENQUEUE_SCRIPT = ("within_limit", "create_queued")

#: How ``limits`` counts a budget, as Flask-Limiter's ``strategy`` names it.
Strategy = Literal["fixed-window", "moving-window", "sliding-window-counter"]


@dataclass(frozen=True)
class RateHit:
    """One request's hit against its rate limit, counted in its message's transaction:
    ``keys`` are where the library counts the budget (the current window's, then for a
    sliding window the previous one's), ``limit`` hits of ``cost`` per ``window`` seconds."""

    strategy: Strategy
    keys: tuple[str, ...]
    limit: int
    window: int
    cost: int = 1

    def args(self) -> list[Any]:
        """The script's six ARGV of this hit."""
        current, previous = (*self.keys, "")[:2]
        return [self.strategy, current, previous, self.limit, self.window, self.cost]


#: The six ARGV of a record without a hit.
NO_HIT = ["", "", "", 0, 0, 0]


@dataclass(frozen=True)
class OverLimit:
    """A record's rate-limit hit was refused: nothing of it was written."""


def rate_limit_part() -> str:
    """The ``limits`` library's scripts for each strategy, as Lua functions of KEYS and ARGV
    (``rate_limit.<name>``): the budget is counted by the same code whether Flask-Limiter or
    the enqueue script counts a hit."""
    scripts = {"fixed_window": RedisStorage.SCRIPT_INCR_EXPIRE,
               "moving_window": RedisStorage.SCRIPT_ACQUIRE_MOVING_WINDOW,
               "sliding_window": RedisStorage.SCRIPT_ACQUIRE_SLIDING_WINDOW}
    functions = "".join(f"rate_limit.{name} = function(KEYS, ARGV)\n"
                        f"{text.decode() if isinstance(text, bytes) else text}\nend\n"
                        for name, text in scripts.items())
    return "local rate_limit = {}\n" + functions


class RecordAndEnqueue:
    """Records created ``queued`` and their broker messages pushed in one transaction, on
    ``store``'s Redis (which is also the broker's)."""

    def __init__(self, store: StoreCore) -> None:
        self.store = store
        self._text = rate_limit_part() + lua("integration.broker", *ENQUEUE_SCRIPT)
        self._script = store.client.register_script(self._text)
        # This transaction is the one round trip of every submission: on the client's own
        # connections.
        self._own = own_connections(store.client)

    def create_queued_many(self, records: Sequence[NewRecord], messages: Sequence[str],
                           request: str = "",
                           answers: Sequence[IdempotentAnswer | None] = (),
                           hits: Sequence[RateHit | None] = ()
                           ) -> list[bool | EarlierAnswer | OverLimit]:
        """Create ``queued`` records and push each one's broker message (``messages[i]`` to
        ``records[i].queue``) in one transaction: one round trip for the whole chunk, and no
        message without its record. False where a record with that id exists (its message is
        not pushed). ``answers[i]``, when given, completes an idempotency key with the answer
        to the request of ``records[i]``, only if its message was pushed; a claiming answer
        whose key is already taken pushes nothing and gives ``EarlierAnswer`` in its place.
        ``hits[i]``, when given, is counted first: over the limit, ``records[i]`` is neither
        created nor pushed, its key not taken, and ``OverLimit`` is in its place."""
        if not records:
            return []
        store, keys = self.store, self.store.keys
        at = now_ms()
        answers = answers or [None] * len(records)
        hits = hits or [None] * len(records)
        channels = {r.channel for r in records}
        every, queued = keys.index("all"), keys.index("status", str(Status.QUEUED))
        args: list[Any] = [
            len(records), store.ttl, at, iso(at), history_entry(Status.QUEUED, at, None),
            request, str(Status.QUEUED), keys.record(""), keys.history(""),
            every, queued, keys.index("type") + ":", keys.index("owner") + ":",
            repr(time.time()), len(channels)]
        for channel in channels:
            args += [channel, history_entry(Status.ACCEPTED, at, {"channel": channel})]
        # The indexes this chunk adds to, trimmed once each below.
        indexes = {every, queued,
                   *(keys.index("type", kind) for kind in {r.type for r in records}),
                   *(keys.index("owner", owner) for owner in {r.owner for r in records})}
        for record, message, answer, hit in zip(records, messages, answers, hits, strict=True):
            args += [record.id, record.type, record.queue, record.owner, record.channel,
                     record.envelope_json, message]
            args += ([answer.key, answer.value, answer.ttl, "claim" if answer.claim else ""]
                     if answer is not None else ["", "", 0, ""])
            args += hit.args() if hit is not None else NO_HIT
            args.append(store.caused_key(record))  # noted only if the record is created

        commands: list[tuple[Any, ...]] = [("EVALSHA", self._script.sha, 0, *args)]
        cutoff = f"({store.cutoff(at)}"
        commands += [("ZREMRANGEBYSCORE", index, "-inf", cutoff) for index in sorted(indexes)]

        def execute() -> list[Any]:
            """The script's replies; run again after NOSCRIPT, when only the idempotent
            trims ran."""
            return list(self._own.pipeline(commands, transaction=True)[0])

        replies = execute_loading(store.client, [self._text], execute)
        return [_created_or_earlier(reply) for reply in replies]


def _created_or_earlier(reply: Any) -> bool | EarlierAnswer | OverLimit:
    if isinstance(reply, bytes | str):
        return EarlierAnswer(reply.decode() if isinstance(reply, bytes) else reply)
    return OverLimit() if reply == -1 else bool(reply)
