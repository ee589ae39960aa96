"""A server WebSocket on the request's socket (RFC 6455 framing by wsproto), with a bounded outbox.

Written for gunicorn's gevent worker, where each blocking call below yields to other
connections; the same code is correct (if costly) with real threads. Every write goes through
one writer, in order, with ``sendall``: a frame is never interleaved with another or cut short.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import socket
import threading
import time
from collections import deque
from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, generate_accept_token

#: Close codes (RFC 6455 section 7.4.1).
NORMAL = 1000
GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013

_RECEIVE_BYTES = 65_536


class Binary(bytes):
    """A binary message (the protocol speaks JSON text frames only)."""


def handshake_error(environ: dict[str, Any]) -> str | None:
    """Why this request is not a WebSocket upgrade we accept, or None."""
    if "websocket" not in environ.get("HTTP_UPGRADE", "").lower():
        return "This endpoint speaks WebSocket: send an Upgrade: websocket request."
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION") != "13":
        return "Only WebSocket version 13 is supported."
    try:
        key = base64.b64decode(environ.get("HTTP_SEC_WEBSOCKET_KEY", ""), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 16:
        return "Sec-WebSocket-Key is missing or malformed."
    return None


class WebSocket:
    """One accepted connection: ``receive`` for the session, ``send``/``close`` for anyone."""

    def __init__(self, sock: socket.socket, *, max_buffer: int, max_message_bytes: int,
                 too_big: str | None = None) -> None:
        self.sock = sock
        #: The frame that explains a close for a message over ``max_message_bytes``.
        self.too_big = too_big
        self.max_buffer = max_buffer
        self.max_message_bytes = max_message_bytes
        self._conn = Connection(ConnectionType.SERVER)
        self._lock = threading.Condition()
        self._outbox: deque[bytes] = deque()
        self._partial: list[str | bytes] = []
        self._partial_size = 0
        self._inbox: deque[str | Binary] = deque()
        self.close_code: int | None = None
        self.close_reason = ""
        self.closing_since: float | None = None
        self.close_grace: float | None = None
        self.writing_since: float | None = None
        self.last_seen = time.monotonic()
        self.last_ping = time.monotonic()
        self._aborted = False
        self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                        name="websocket-writer")

    @classmethod
    def accept(cls, environ: dict[str, Any], sock: socket.socket, *, max_buffer: int,
               max_message_bytes: int, too_big: str | None = None) -> WebSocket:
        """Answer 101 on the raw socket (no extensions: compression would cost memory per
        socket) and start the writer."""
        key = environ["HTTP_SEC_WEBSOCKET_KEY"].encode("ascii")
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                     + generate_accept_token(key) + b"\r\n\r\n")
        websocket = cls(sock, max_buffer=max_buffer, max_message_bytes=max_message_bytes,
                        too_big=too_big)
        websocket._writer.start()
        return websocket

    # -- sending ---------------------------------------------------------------------------
    @property
    def open(self) -> bool:
        return self.closing_since is None and not self._aborted

    def send(self, text: str) -> bool:
        """Queue a text frame; False when the connection is closing or the outbox is full
        (the caller decides what a full outbox means)."""
        with self._lock:
            if not self.open or len(self._outbox) >= self.max_buffer:
                return False
            self._outbox.append(self._conn.send(TextMessage(data=text)))
            self._lock.notify_all()
            return True

    def ping(self) -> None:
        with self._lock:
            if self.open:
                self.last_ping = time.monotonic()
                self._outbox.append(self._conn.send(Ping(payload=b"hb")))
                self._lock.notify_all()

    def close(self, code: int, reason: str = "", last: str | None = None,
              drop_pending: bool = False, grace: float | None = None) -> None:
        """Start the closing handshake: ``last`` (an error frame) then the close frame, after
        what is queued unless ``drop_pending`` (a slow client does not get its backlog).
        ``grace``: how long the client's answer is awaited (None: the send timeout)."""
        with self._lock:
            if self._aborted or self._conn.state not in (ConnectionState.OPEN,
                                                         ConnectionState.REMOTE_CLOSING):
                return
            if drop_pending:
                self._outbox.clear()
            if last is not None and self._conn.state == ConnectionState.OPEN:
                self._outbox.append(self._conn.send(TextMessage(data=last)))
            self.close_code, self.close_reason = code, reason
            self._outbox.append(self._conn.send(CloseConnection(code=code,
                                                                reason=reason[:120])))
            if self.closing_since is None:
                self.closing_since = time.monotonic()
                self.close_grace = grace
            self._lock.notify_all()

    def abort(self) -> None:
        """Drop the connection at once (a client that does not read or answer)."""
        with self._lock:
            self._aborted = True
            self._outbox.clear()
            self._lock.notify_all()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a writer blocked in sendall

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                while not self._outbox and not self._aborted:
                    self._lock.wait()
                if self._aborted:
                    return
                data = self._outbox.popleft()
                self.writing_since = time.monotonic()
            try:
                self.sock.sendall(data)
            except OSError:
                self.abort()
                return
            finally:
                with self._lock:
                    self.writing_since = None
                    self._lock.notify_all()  # finish() waits for the last frame to go out

    # -- receiving -------------------------------------------------------------------------
    def receive(self) -> str | Binary | None:
        """The next message from the client; None once the connection is closed."""
        while not self._inbox:
            if self._aborted or self._conn.state == ConnectionState.CLOSED:
                return None
            try:
                data = self.sock.recv(_RECEIVE_BYTES)
            except OSError:
                data = b""
            if not data:
                self.abort()
                return None
            try:
                self._conn.receive_data(data)
                for event in self._conn.events():
                    self._handle(event)
            except LocalProtocolError:
                self.abort()
                return None
        return self._inbox.popleft()

    def _handle(self, event: Any) -> None:
        self.last_seen = time.monotonic()
        if isinstance(event, Message):
            self._partial.append(event.data)
            self._partial_size += len(event.data)
            if self._partial_size > self.max_message_bytes:
                self._partial, self._partial_size = [], 0
                self.close(MESSAGE_TOO_BIG, "message too big", last=self.too_big)
            elif event.message_finished:
                if isinstance(event, TextMessage):
                    self._inbox.append("".join(str(part) for part in self._partial))
                elif isinstance(event, BytesMessage):
                    self._inbox.append(Binary(b"".join(p for p in self._partial
                                                       if isinstance(p, bytes | bytearray))))
                self._partial, self._partial_size = [], 0
        elif isinstance(event, Ping):
            with self._lock:
                # A client that pings without reading gets no unbounded pile of pongs.
                if self._conn.state == ConnectionState.OPEN and \
                        len(self._outbox) < self.max_buffer:
                    self._outbox.append(self._conn.send(event.response()))
                    self._lock.notify_all()
        elif isinstance(event, CloseConnection):
            # The client's close (or a protocol error wsproto found): answer it and stop.
            self.close(event.code if event.code not in (1005, 1006) else NORMAL,
                       event.reason or "")
        elif isinstance(event, Pong):
            pass  # last_seen above is all a pong is for

    def finish(self, linger: float) -> None:
        """After the session: let the close frame go out (at most ``linger`` s), then close."""
        self.close(NORMAL)
        deadline = time.monotonic() + linger
        with self._lock:
            while (self._outbox or self.writing_since is not None) and not self._aborted:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
        self.abort()
        self._writer.join(timeout=linger)
