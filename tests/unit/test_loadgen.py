"""The benchmark's HTTP client: a keep-alive connection the server closes just as a request
goes out (its keep-alive timeout) costs a retry, not a failed run; a real failure is still
reported."""

from __future__ import annotations

import asyncio

from bench.loadgen import Connection, http_request

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
REQUEST = http_request("/", b"{}", {"Idempotency-Key": "k"})


async def _serve(drop: set[tuple[int, int]]
                 ) -> tuple[asyncio.Server, list[tuple[int, int]], int]:
    """A server that answers each request, except request ``r`` of connection ``c`` for
    every ``(c, r)`` in ``drop``: it reads that one and closes without a word. Returns the
    server, the requests it read as (connection, request), and its port."""
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
                    return
                writer.write(OK)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, seen, server.sockets[0].getsockname()[1]


def test_a_reused_connection_closed_before_answering_is_retried_on_a_new_one() -> None:
    async def run() -> tuple[list[int], list[tuple[int, int]]]:
        server, seen, port = await _serve({(1, 2)})
        connection = Connection("127.0.0.1", port)
        statuses = [await connection.send(REQUEST) for _ in range(3)]
        connection.close()
        server.close()
        return statuses, seen

    statuses, seen = asyncio.run(run())
    assert statuses == [200, 200, 200]
    assert seen == [(1, 1), (1, 2), (2, 1), (2, 2)], "the dropped request went out again"


def test_a_pre_connected_connection_closed_at_its_first_request_is_retried() -> None:
    """The open-loop generator connects before its clock starts, so a connection's first
    request may find it closed by the server's keep-alive timeout too."""
    async def run() -> tuple[int, list[tuple[int, int]]]:
        server, seen, port = await _serve({(1, 1)})
        connection = Connection("127.0.0.1", port)
        await connection.connect()
        status = await connection.send(REQUEST)
        connection.close()
        server.close()
        return status, seen

    status, seen = asyncio.run(run())
    assert status == 200 and seen == [(1, 1), (2, 1)]


def test_a_new_connection_that_fails_is_reported_not_retried() -> None:
    async def run() -> tuple[list[int], list[tuple[int, int]]]:
        server, seen, port = await _serve({(1, 1), (2, 1)})
        connection = Connection("127.0.0.1", port)
        statuses = [await connection.send(REQUEST)]
        statuses.append(await connection.send(REQUEST))  # closed: a new one, fails again
        connection.close()
        server.close()
        return statuses, seen

    statuses, seen = asyncio.run(run())
    assert statuses == [0, 0]
    assert seen == [(1, 1), (2, 1)], "one attempt each"
