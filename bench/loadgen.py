"""HTTP load generators over keep-alive connections: closed loop (peak) and open loop (paced).

The open-loop generator fixes every request's send time before the run and measures latency
from that intended time, so a stalled server is charged for the requests it delayed rather
than silently slowing the generator down (coordinated omission, as wrk2 avoids it). Raw
asyncio streams with pre-built request bytes keep the generator's own cost to a few tens of
microseconds a request, small beside a Flask request on the same two cores.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

#: How long a connection must have been idle for a request that found it closed to be sent
#: again (see ``Connection.send``).
RESEND_AFTER_IDLE = 1.0

#: Builds the bytes of request number ``n`` (headers and body).
RequestFactory = Callable[[int], bytes]


def http_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: bench", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.body = b""  # the last answer's body (b"" for a chunked one)
        self.idle_since = 0.0  # when the connection was opened or last answered
        self.retries = 0  # requests sent again after an idle connection closed

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.idle_since = time.perf_counter()

    async def send(self, payload: bytes) -> int:
        """Send one request and read its whole answer; the status code (0 on a broken
        connection).

        A connection that sat idle may be closed by the server just as the request goes out
        (gunicorn closes one unused for its keep-alive timeout, 2 s). When a connection that
        was idle for ``RESEND_AFTER_IDLE`` or longer ends before any byte of an answer, the
        request is sent once more on a new connection, as HTTP clients do, and counted in
        ``retries``. A connection in steady use (every closed-loop figure) is never resent
        on, so a server that fails under load still fails the figure. Only paced requests
        can wait that long, and each of those carries its own ``Idempotency-Key`` or changes
        nothing (hello-world, ``guarded``'s counted hit)."""
        if self.reader is not None and self.reader.at_eof():
            self.close()  # the server closed it while idle (gunicorn's keep-alive timeout)
        idle = None if self.writer is None else time.perf_counter() - self.idle_since
        status, answered = await self._send(payload)
        if status == 0 and idle is not None and idle >= RESEND_AFTER_IDLE and not answered:
            self.retries += 1
            status, _ = await self._send(payload)
        return status

    async def _send(self, payload: bytes) -> tuple[int, bool]:
        """The status code (0 on a broken connection), and whether any byte of an answer
        arrived."""
        answered = False
        try:
            if self.writer is None:
                await self.connect()
            assert self.reader is not None and self.writer is not None
            self.writer.write(payload)
            head = await self.reader.readuntil(b"\r\n\r\n")
            answered = True
            status = int(head[9:12])
            length, close, chunked = 0, False, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            self.body = b""
            if chunked:
                await self._skip_chunks()
            elif length:
                self.body = await self.reader.readexactly(length)
            if close:
                self.close()
            self.idle_since = time.perf_counter()
            return status, True
        except asyncio.IncompleteReadError as exc:
            self.close()
            return 0, answered or bool(exc.partial)
        except (OSError, ValueError):
            self.close()
            return 0, answered

    async def _skip_chunks(self) -> None:
        assert self.reader is not None
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            await self.reader.readexactly(size + 2)
            if size == 0:
                return

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Outcome:
    """What a run did: completed requests by status, elapsed seconds, latencies (ms)."""

    statuses: Counter[int] = field(default_factory=Counter)
    items: int = 0  # what ``items`` counted in the answers (accepted messages of batches)
    retries: int = 0  # requests sent again after the server closed an idle connection
    elapsed: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def completed(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return self.ok / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def _closed(host: str, port: int, make: RequestFactory, connections: int,
                  duration: float, warmup: float,
                  items: Callable[[int, bytes], int] | None,
                  measuring: Callable[[], None] | None = None) -> Outcome:
    outcome = Outcome()
    counter = iter(range(1 << 62))
    start = time.perf_counter()
    measure_from, stop = start + warmup, start + warmup + duration
    if measuring is not None:
        asyncio.get_running_loop().call_later(warmup, measuring)

    async def loop() -> None:
        conn = Connection(host, port)
        counted = 0
        # Past the stop only to see one answer: a request slower than the whole run (a big
        # batch on a loaded machine) still yields a figure.
        while time.perf_counter() < stop or (counted == 0 and time.perf_counter() < stop + 60):
            status = await conn.send(make(next(counter)))
            if time.perf_counter() >= measure_from:  # answered after the warm-up
                outcome.statuses[status] += 1
                if items is not None:
                    outcome.items += items(status, conn.body)
                counted += 1
        outcome.retries += conn.retries
        conn.close()

    await asyncio.gather(*(loop() for _ in range(connections)))
    outcome.elapsed = time.perf_counter() - measure_from
    return outcome


def closed_loop(host: str, port: int, make: RequestFactory, *, connections: int,
                duration: float, warmup: float = 0.5,
                items: Callable[[int, bytes], int] | None = None,
                measuring: Callable[[], None] | None = None) -> Outcome:
    """Each of ``connections`` sends its next request as soon as the last is answered: the
    server's peak rate (answers within the warm-up are not counted). ``items(status, body)``
    counts something in each answer (the accepted messages of a batch); ``measuring()`` is
    called when the warm-up ends."""
    return asyncio.run(_closed(host, port, make, connections, duration, warmup, items,
                               measuring))


async def _paced(host: str, port: int, make: RequestFactory, rate: float, duration: float,
                 connections: int) -> Outcome:
    outcome = Outcome()
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    pool = [Connection(host, port) for _ in range(connections)]
    # Connected before the clock starts: the run measures requests, not TCP handshakes.
    await asyncio.gather(*(conn.connect() for conn in pool))
    for conn in pool:
        idle.put_nowait(conn)
    total = max(1, int(rate * duration))
    start = time.perf_counter() + 0.05
    tasks: set[asyncio.Task[None]] = set()

    async def one(n: int, intended: float) -> None:
        conn = await idle.get()  # waiting for a free connection counts as latency
        status = await conn.send(make(n))
        outcome.latencies_ms.append((time.perf_counter() - intended) * 1000)
        outcome.statuses[status] += 1
        idle.put_nowait(conn)

    for n in range(total):
        intended = start + n / rate
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(n, intended))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    outcome.elapsed = time.perf_counter() - start
    while not idle.empty():
        idle.get_nowait().close()
    outcome.retries = sum(conn.retries for conn in pool)
    return outcome


def open_loop(host: str, port: int, make: RequestFactory, *, rate: float, duration: float,
              connections: int = 64) -> Outcome:
    """Requests at fixed intended times (``rate`` per second); latency from each intended
    time, so a late request is charged for its wait (no coordinated omission)."""
    return asyncio.run(_paced(host, port, make, rate, duration, connections))
