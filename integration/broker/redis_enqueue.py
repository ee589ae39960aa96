"""Record and enqueue in one transaction, for a broker on the status store's Redis database
(decision 0004): each chunk's records are created already ``queued`` and their Celery
messages pushed onto the broker's lists by one Lua script, so a message is in the queue if
and only if its record exists.

It serves the broker, so it lives here; the record's keys, fields and history entries are the
store's (``Keys``, ``history_entry``, ``StoreCore.cause_links``), taken from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from integration.messages.status import Status
from integration.store.codec import history_entry, iso, now_ms
from integration.store.connections import execute_loading, own_connections
from integration.store.core import StoreCore
from integration.store.model import EarlierAnswer, IdempotentAnswer, NewRecord
from integration.store.scripts import lua

#: The script's parts: files of ``integration/broker/lua/``.
ENQUEUE_SCRIPT = ("create_queued",)


class RecordAndEnqueue:
    """Records created ``queued`` and their broker messages pushed in one transaction, on
    ``store``'s Redis (which is also the broker's)."""

    def __init__(self, store: StoreCore) -> None:
        self.store = store
        self._text = lua("integration.broker", *ENQUEUE_SCRIPT)
        self._script = store.client.register_script(self._text)
        # This transaction is the one round trip of every submission: on the client's own
        # connections.
        self._own = own_connections(store.client)

    def create_queued_many(self, records: Sequence[NewRecord], messages: Sequence[str],
                           request: str = "",
                           answers: Sequence[IdempotentAnswer | None] = ()
                           ) -> list[bool | EarlierAnswer]:
        """Create ``queued`` records and push each one's broker message (``messages[i]`` to
        ``records[i].queue``) in one transaction: one round trip for the whole chunk, and no
        message without its record. False where a record with that id exists (its message is
        not pushed). ``answers[i]``, when given, completes an idempotency key with the answer
        to the request of ``records[i]``, only if its message was pushed; a claiming answer
        whose key is already taken pushes nothing and gives ``EarlierAnswer`` in its place."""
        if not records:
            return []
        store, keys = self.store, self.store.keys
        at = now_ms()
        answers = answers or [None] * len(records)
        channels = {r.channel for r in records}
        every, queued = keys.index("all"), keys.index("status", str(Status.QUEUED))
        args: list[Any] = [
            len(records), store.ttl, at, iso(at), history_entry(Status.QUEUED, at, None),
            request, str(Status.QUEUED), keys.record(""), keys.history(""),
            every, queued, keys.index("type") + ":", keys.index("owner") + ":",
            len(channels)]
        for channel in channels:
            args += [channel, history_entry(Status.ACCEPTED, at, {"channel": channel})]
        # The indexes this chunk adds to, trimmed once each below.
        indexes = {every, queued,
                   *(keys.index("type", kind) for kind in {r.type for r in records}),
                   *(keys.index("owner", owner) for owner in {r.owner for r in records})}
        for record, message, answer in zip(records, messages, answers, strict=True):
            args += [record.id, record.type, record.queue, record.owner, record.channel,
                     record.envelope_json, message]
            args += ([answer.key, answer.value, answer.ttl, "claim" if answer.claim else ""]
                     if answer is not None else ["", "", 0, ""])

        commands = [link for record in records for link in store.cause_links(record)]
        position = len(commands)
        commands.append(("EVALSHA", self._script.sha, 0, *args))
        cutoff = f"({store.cutoff(at)}"
        commands += [("ZREMRANGEBYSCORE", index, "-inf", cutoff) for index in sorted(indexes)]

        def execute() -> list[Any]:
            """The script's replies; run again after NOSCRIPT, when only idempotent cause
            links and trims ran."""
            return list(self._own.pipeline(commands, transaction=True)[position])

        replies = execute_loading(store.client, [self._text], execute)
        return [_created_or_earlier(reply) for reply in replies]


def _created_or_earlier(reply: Any) -> bool | EarlierAnswer:
    if isinstance(reply, bytes | str):
        return EarlierAnswer(reply.decode() if isinstance(reply, bytes) else reply)
    return bool(reply)
