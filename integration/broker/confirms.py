"""RabbitMQ: publish a chunk on a confirm-mode channel, then wait for all its confirms.

kombu's ``confirm_publish`` waits for each message's confirm before the next publish: a
round trip per message, and RabbitMQ then syncs its disk once per message. Here a chunk is
written in one go and its confirms are collected together, so the broker can confirm (and
sync) many messages at once.

Each message ends in one of four fates: confirmed (its own delivery tag was acked), refused
(nacked, or returned as unroutable), in doubt (written, but its confirm was lost with the
connection or missing at the deadline: the broker may hold it) or unsent (nothing of it was
written). Only confirmed messages are accepted; the caller keeps the records of those in
doubt, since a message the broker holds must find its record.

Confirms are collected by listeners on the channel (``channel.events['basic_ack']`` and
``['basic_nack']``), never by a one-shot ``channel.wait``: py-amqp's ``basic_publish`` reads
one pending frame before each publish (``drain_events(timeout=0)``, to notice a
``connection.blocked``), and a confirm read there reaches the channel's listeners only. A
one-shot wait never sees it and waits out its whole timeout (what an earlier version did:
under load, confirms arrive while the chunk is still being written). The frames are now
written directly (``integration.amqp_frames``), so nothing reads between the write and the
wait, and the listeners see every confirm wherever it is read.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import time
import weakref
from collections.abc import Sequence
from typing import Any

from integration.broker.amqp_frames import TaskFrames, TaskMessage


class NotConfirmed(Exception):
    """The broker did not confirm every message of a chunk (nacked, returned, or silent)."""


class Fate(enum.Enum):
    """What became of one message published on a confirm-mode channel."""

    CONFIRMED = "confirmed"
    REFUSED = "refused"      # nacked, or returned as unroutable: the broker does not hold it
    IN_DOUBT = "in doubt"    # written, confirm lost or late: the broker may hold it
    UNSENT = "unsent"        # nothing of it was written


class _Tracker:
    """The confirms of the chunk in flight on one channel, by delivery tag."""

    def __init__(self) -> None:
        self.first = 1          # delivery tag of the chunk's first message
        self.acked: list[bool | None] = []
        self.floor = 0          # every index below is settled
        self.pending = 0
        self.returned: set[str] = set()

    def start(self, first_tag: int, size: int) -> None:
        self.first, self.acked, self.floor, self.pending = first_tag, [None] * size, 0, size
        self.returned = set()

    def settle(self, tag: int, multiple: bool, ok: bool) -> None:
        index = tag - self.first
        if index < 0 or index >= len(self.acked):
            return  # not this chunk's (a previous chunk's late confirm)
        for i in range(self.floor, index + 1) if multiple else (index,):
            if self.acked[i] is None:
                self.acked[i] = ok
                self.pending -= 1
        if multiple:
            self.floor = index + 1

    def ack(self, tag: int, multiple: bool) -> None:
        self.settle(tag, multiple, True)

    def nack(self, tag: int, multiple: bool) -> None:
        self.settle(tag, multiple, False)

    def fates(self, chunk: Sequence[TaskMessage]) -> list[Fate]:
        """Per message: confirmed (acked, not returned as unroutable), refused, or in doubt
        (no confirm yet)."""
        return [Fate.REFUSED if message.id in self.returned or ok is False else
                Fate.CONFIRMED if ok else Fate.IN_DOUBT
                for ok, message in zip(self.acked, chunk, strict=True)]

    def on_return(self, _exc: Any, _exchange: str, _routing_key: str, message: Any) -> None:
        # RabbitMQ sends an unroutable message back before its ack: the ack must not count.
        self.returned.add(str(message.properties.get("correlation_id", "")))


class _ConfirmChannel:
    """A confirm-mode channel of one connection, kept open between chunks."""

    def __init__(self, connection: Any) -> None:
        self.channel = connection.channel()
        self.channel.confirm_select()
        self.channel._confirm_selected = True  # what basic_publish_confirm would have done
        self.next_tag = 1
        self.tracker = _Tracker()
        self.declared: set[str] = set()  # queues declared on this channel
        tracker = self.tracker
        self.channel.events["basic_ack"].add(tracker.ack)
        self.channel.events["basic_nack"].add(tracker.nack)
        self.channel.events["basic_return"].add(tracker.on_return)


class ConfirmedPublisher:
    """Publishes task messages to RabbitMQ with publisher confirms awaited chunk by chunk."""

    def __init__(self, celery_app: Any, frames: TaskFrames, *, timeout: float) -> None:
        self.app = celery_app
        self._frames = frames
        self._timeout = timeout
        self._channels: weakref.WeakKeyDictionary[Any, _ConfirmChannel] = (
            weakref.WeakKeyDictionary())

    def publish(self, messages: Sequence[TaskMessage], chunk_size: int
                ) -> tuple[list[Fate], BaseException | None]:
        """Publish in order; one fate per message and the error that stopped publishing, if
        any. Nothing is published after a chunk that failed."""
        fates: list[Fate] = []
        with self.app.pool.acquire(block=True) as connection:
            for start in range(0, len(messages), chunk_size):
                chunk_fates, error = self._chunk(connection, messages[start:start + chunk_size])
                fates += chunk_fates
                if error is not None:
                    return fates + [Fate.UNSENT] * (len(messages) - len(fates)), error
        return fates, None

    def _chunk(self, connection: Any, chunk: Sequence[TaskMessage]
               ) -> tuple[list[Fate], BaseException | None]:
        try:
            return self._attempt(connection, chunk)
        except _NothingWritten as failed:
            if not _is_connection_error(connection, failed.error):
                return [Fate.UNSENT] * len(chunk), failed.error
        # A pooled connection the broker closed while idle (no heartbeats are sent between
        # batches): nothing of the chunk was written, so it goes once more on a new
        # connection, as send_task's retry policy did.
        try:
            return self._attempt(connection, chunk)
        except _NothingWritten as failed:
            return [Fate.UNSENT] * len(chunk), failed.error

    def _attempt(self, connection: Any, chunk: Sequence[TaskMessage]
                 ) -> tuple[list[Fate], BaseException | None]:
        try:
            connection.ensure_connection(max_retries=1)
            # Opening the channel and declaring queues wait for the broker's answers: a
            # broker that stopped answering must fail them within the publish timeout too.
            with connection.connection.transport.having_timeout(self._timeout):
                state = self._channel(connection)
                for queue in {message.queue for message in chunk} - state.declared:
                    self._declare(state.channel, queue)
                    state.declared.add(queue)
            # A connection the broker closed meanwhile (a restart, an idle timeout) shows in
            # what it sent last: read it now, while nothing of the chunk is written.
            with contextlib.suppress(socket.timeout):
                connection.connection.drain_events(timeout=0)
        except Exception as exc:  # noqa: BLE001 - reported with the chunk
            self._drop(connection)
            raise _NothingWritten(exc) from exc
        raw = connection.connection
        tracker = state.tracker
        tracker.start(state.next_tag, len(chunk))
        encode, channel_id = self._frames.encode, state.channel.channel_id
        data = b"".join(encode(message, channel_id, raw.frame_max) for message in chunk)
        try:
            # The whole chunk in one write (py-amqp would wait for each message's confirm
            # with confirm_publish on); a broker that stops reading fails it after the
            # publish timeout.
            with raw.transport.having_timeout(self._timeout):
                raw.transport.write(data)
        except Exception as exc:  # noqa: BLE001 - part of the chunk may have been sent
            self._drop(connection)
            return [Fate.IN_DOUBT] * len(chunk), exc
        raw.bytes_sent += 1  # for heartbeats, as py-amqp's frame writer counts
        state.next_tag += len(chunk)
        try:
            self._await(raw, tracker)
        except Exception as exc:  # noqa: BLE001 - what was confirmed until now still counts
            self._drop(connection)
            return tracker.fates(chunk), exc
        fates = tracker.fates(chunk)
        refused = fates.count(Fate.REFUSED)
        if refused:
            # A channel whose queue lost its leader can go on nacking every later publish
            # (RabbitMQ 3.10): the next chunk gets a fresh one.
            self._forget_channel(raw)
            return fates, NotConfirmed(f"the broker refused {refused} message(s)")
        return fates, None

    def _channel(self, connection: Any) -> _ConfirmChannel:
        raw = connection.connection
        state = self._channels.get(raw)
        if state is None or not state.channel.is_open:
            state = self._channels[raw] = _ConfirmChannel(raw)
        return state

    def _forget_channel(self, raw: Any) -> None:
        state = self._channels.pop(raw, None)
        if state is not None:
            with contextlib.suppress(Exception):
                state.channel.close()

    def _declare(self, channel: Any, queue: str) -> None:
        """The queue as Celery declares it (its arguments), once per channel. Only the queue:
        messages go to it through the default exchange, and binding it to its own exchange
        (workers do) waits, in a cluster, until a node gone silent is counted down."""
        self.app.amqp.queues[queue].bind(channel).queue_declare()

    def _await(self, connection: Any, tracker: _Tracker) -> None:
        """Read frames until every message of the chunk is acked or nacked, for at most the
        publish timeout."""
        deadline = time.monotonic() + self._timeout
        while tracker.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NotConfirmed(f"{tracker.pending} message(s) not confirmed within "
                                   f"{self._timeout} s")
            connection.drain_events(timeout=remaining)

    def _drop(self, connection: Any) -> None:
        """Forget the connection without a closing handshake (which could hang on a broker
        that stopped answering); the pool opens a new one on next use."""
        raw = getattr(connection, "_connection", None)
        if raw is not None:
            self._channels.pop(raw, None)
        with contextlib.suppress(Exception):
            connection.collect()


class _NothingWritten(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _is_connection_error(connection: Any, exc: BaseException) -> bool:
    return isinstance(exc, (*connection.connection_errors, OSError))


__all__ = ["ConfirmedPublisher", "Fate", "NotConfirmed"]
