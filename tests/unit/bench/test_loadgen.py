"""The benchmark's HTTP client: a keep-alive connection the server closed just as a request
went out (its keep-alive timeout) costs a retry, not a failed run; a failure under load, or
on a new connection, is still reported."""

from __future__ import annotations

import asyncio

import pytest

from bench import loadgen
from bench.loadgen import Connection, http_request

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
REQUEST = http_request("/", b"{}", {"Idempotency-Key": "k"})
#: Longer than the idle time that allows a retry, as the tests set it.
IDLE = 0.1


@pytest.fixture(autouse=True)
def _short_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loadgen, "RESEND_AFTER_IDLE", IDLE / 2)


async def _serve(drop: set[tuple[int, int]], partial: bytes = b""
                 ) -> tuple[asyncio.Server, list[tuple[int, int]], int]:
    """A server that answers each request, except request ``r`` of connection ``c`` for
    every ``(c, r)`` in ``drop``: it reads that one, writes ``partial`` and closes. Returns
    the server, the requests it read as (connection, request), and its port."""
    seen: list[tuple[int, int]] = []
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections
        try:
            for request in range(1, 100):
                await reader.readuntil(b"\r\n\r\n{}")
                seen.append((number, request))
                if (number, request) in drop:
                    writer.write(partial)
                    await writer.drain()
                    return
                writer.write(OK)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, seen, server.sockets[0].getsockname()[1]


def _run(drop: set[tuple[int, int]], pauses: list[float], *, partial: bytes = b"",
         connect_first: bool = False) -> tuple[list[int], list[tuple[int, int]], int]:
    """One request after each pause, on one ``Connection``: statuses, what the server read,
    and the connection's retries."""
    async def run() -> tuple[list[int], list[tuple[int, int]], int]:
        server, seen, port = await _serve(drop, partial)
        connection = Connection("127.0.0.1", port)
        if connect_first:
            await connection.connect()
        statuses = []
        for pause in pauses:
            await asyncio.sleep(pause)
            statuses.append(await connection.send(REQUEST))
        connection.close()
        server.close()
        return statuses, seen, connection.retries

    return asyncio.run(run())


def test_an_idle_connection_closed_before_answering_is_retried_on_a_new_one() -> None:
    statuses, seen, retries = _run({(1, 2)}, [0, IDLE, 0])
    assert statuses == [200, 200, 200] and retries == 1
    assert seen == [(1, 1), (1, 2), (2, 1), (2, 2)], "the dropped request went out again"


def test_a_pre_connected_connection_closed_at_its_first_request_is_retried() -> None:
    """The open-loop generator connects before its clock starts, so a connection's first
    request may find it closed by the server's keep-alive timeout too."""
    statuses, seen, retries = _run({(1, 1)}, [IDLE], connect_first=True)
    assert statuses == [200] and retries == 1 and seen == [(1, 1), (2, 1)]


def test_a_connection_in_steady_use_that_breaks_is_reported() -> None:
    """Under load (no idle time) a broken answer is the server's failure, not a race."""
    statuses, seen, retries = _run({(1, 2)}, [0, 0])
    assert statuses == [200, 0] and retries == 0 and seen == [(1, 1), (1, 2)]


def test_a_partial_answer_is_not_sent_again() -> None:
    """The server took the request if it began to answer."""
    statuses, seen, retries = _run({(1, 2)}, [0, IDLE], partial=b"HTTP/1.1 20")
    assert statuses == [200, 0] and retries == 0 and seen == [(1, 1), (1, 2)]


def test_a_new_connection_that_fails_is_reported_not_retried() -> None:
    statuses, seen, retries = _run({(1, 1), (2, 1)}, [0, IDLE])
    assert statuses == [0, 0] and retries == 0
    assert seen == [(1, 1), (2, 1)], "one attempt each"
