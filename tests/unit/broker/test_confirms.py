"""What each message of a confirmed publish became: a confirm lost with the connection leaves
the messages written in doubt (the broker may hold them), never "not sent"."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from integration.broker.amqp_frames import TaskMessage
from integration.broker.confirms import ConfirmedPublisher, Fate, _Tracker
from integration.broker.publisher import Outgoing, Publisher


def messages(n: int) -> list[TaskMessage]:
    return [TaskMessage("q", f"m{i}", b"{}", {}) for i in range(n)]


def test_the_tracker_tells_confirmed_refused_and_in_doubt_apart() -> None:
    tracker = _Tracker()
    chunk = messages(5)
    tracker.start(first_tag=11, size=5)
    tracker.ack(12, multiple=True)        # m0, m1
    tracker.nack(13, multiple=False)      # m2
    tracker.ack(14, multiple=False)       # m3, but returned as unroutable
    tracker.on_return(None, "", "q", SimpleNamespace(properties={"correlation_id": "m3"}))
    tracker.ack(99, multiple=False)       # not this chunk's
    assert tracker.fates(chunk) == [Fate.CONFIRMED, Fate.CONFIRMED, Fate.REFUSED,
                                    Fate.REFUSED, Fate.IN_DOUBT]
    assert tracker.pending == 1


class Broken(ConnectionError):
    pass


class Link(SimpleNamespace):
    """The raw AMQP connection (a key of a weak dictionary, as py-amqp's is)."""

    __hash__ = object.__hash__


class FakeConnection:
    """A kombu connection over a fake AMQP link: ``on_drain`` answers each read."""

    connection_errors = (Broken,)

    def __init__(self, on_drain: Callable[[Any], None], write_fails: bool = False) -> None:
        self.written: list[bytes] = []
        self.listeners: dict[str, set[Callable[..., None]]] = defaultdict(set)
        channel = SimpleNamespace(confirm_select=lambda: None, events=self.listeners,
                                  channel_id=1, is_open=True)
        self.drains = 0

        def write(data: bytes) -> None:
            if write_fails:
                raise Broken("reset by peer")
            self.written.append(data)

        def drain_events(timeout: float) -> None:
            self.drains += 1
            if self.drains > 1:  # the first read is the idle check before the chunk
                on_drain(self)

        transport = SimpleNamespace(having_timeout=lambda _t: contextlib.nullcontext(),
                                    write=write)
        self.connection = Link(channel=lambda: channel, transport=transport,
                                          drain_events=drain_events, frame_max=131072,
                                          bytes_sent=0)
        self._connection = self.connection

    def ensure_connection(self, max_retries: int) -> None:
        return None

    def collect(self) -> None:
        return None

    def ack(self, tag: int, multiple: bool = False) -> None:
        for listener in list(self.listeners["basic_ack"]):
            listener(tag, multiple)


def publisher_over(connection: FakeConnection) -> ConfirmedPublisher:
    @contextlib.contextmanager
    def acquire(block: bool) -> Iterator[FakeConnection]:
        yield connection

    app = SimpleNamespace(pool=SimpleNamespace(acquire=acquire))
    frames = SimpleNamespace(encode=lambda message, channel, frame_max: message.id.encode())
    confirmed = ConfirmedPublisher(app, frames, timeout=0.2)  # type: ignore[arg-type]
    confirmed._declare = lambda channel, queue: None  # type: ignore[method-assign]
    return confirmed


def test_a_connection_lost_before_the_confirms_leaves_the_written_messages_in_doubt() -> None:
    def two_acks_then_gone(connection: FakeConnection) -> None:
        connection.ack(2, multiple=True)
        raise Broken("connection reset")

    connection = FakeConnection(two_acks_then_gone)
    fates, error = publisher_over(connection).publish(messages(7), chunk_size=4)
    assert isinstance(error, Broken)
    assert connection.written == [b"m0m1m2m3"]
    assert fates == [Fate.CONFIRMED, Fate.CONFIRMED, Fate.IN_DOUBT, Fate.IN_DOUBT,
                     Fate.UNSENT, Fate.UNSENT, Fate.UNSENT]


def test_a_write_that_breaks_leaves_its_chunk_in_doubt() -> None:
    connection = FakeConnection(lambda _c: None, write_fails=True)
    fates, error = publisher_over(connection).publish(messages(3), chunk_size=2)
    assert isinstance(error, Broken)
    assert fates == [Fate.IN_DOUBT, Fate.IN_DOUBT, Fate.UNSENT]


def test_confirms_missing_at_the_deadline_leave_their_messages_in_doubt() -> None:
    connection = FakeConnection(lambda c: c.ack(1))
    fates, error = publisher_over(connection).publish(messages(2), chunk_size=2)
    assert error is not None and "not confirmed" in str(error)
    assert fates == [Fate.CONFIRMED, Fate.IN_DOUBT]


@pytest.mark.parametrize(("fates", "sent", "doubt", "unsent"), [
    ([Fate.CONFIRMED, Fate.IN_DOUBT, Fate.UNSENT], [0], [1], [2]),
    ([Fate.REFUSED, Fate.CONFIRMED, Fate.UNSENT], [1], [], [0, 2]),
    ([Fate.IN_DOUBT, Fate.REFUSED], [], [0], [1]),
])
def test_the_outcome_says_which_items_the_broker_holds_may_hold_or_does_not(
        fates: list[Fate], sent: list[int], doubt: list[int], unsent: list[int]) -> None:
    publisher = Publisher.__new__(Publisher)
    publisher.chunk_size = 10
    publisher._confirmed = SimpleNamespace(  # type: ignore[assignment]
        publish=lambda _messages, _size: (fates, Broken("gone")))
    items = [Outgoing(f"m{i}", {"id": f"m{i}", "type": "alert"}, "q") for i in range(len(fates))]
    outcome = publisher._publish_confirmed(items)
    assert [i for i in range(len(fates)) if outcome.sent(i)] == sent
    assert [i for i in range(len(fates)) if outcome.in_doubt(i)] == doubt
    assert [int(item.id[1:]) for item in outcome.unsent(items)] == unsent


def test_a_nacked_chunk_leaves_its_channel_for_a_fresh_one() -> None:
    opened: list[Any] = []

    def nack_all(connection: FakeConnection) -> None:
        for listener in list(connection.listeners["basic_nack"]):
            listener(2, True)

    connection = FakeConnection(nack_all)
    make = connection.connection.channel

    def channel() -> Any:
        opened.append(make())
        return SimpleNamespace(**vars(opened[-1]), close=lambda: None)

    connection.connection.channel = channel
    confirmed = publisher_over(connection)
    for _ in range(2):
        fates, error = confirmed.publish(messages(2), chunk_size=2)
        assert fates == [Fate.REFUSED, Fate.REFUSED] and error is not None
    assert len(opened) == 2
