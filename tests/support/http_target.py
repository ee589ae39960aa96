"""A real HTTP server in a thread that records every request and answers as a test scripts it."""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from integration.ops.embedded_redis import free_port

#: The port written in tests/support/targets.yaml; the session's copy of that file (which
#: the workers read) names TARGETS_PORT instead, a port free when the session started.
TEMPLATE_PORT = 28417
TARGETS_PORT = free_port()


def targets_file(directory: Path) -> Path:
    """tests/support/targets.yaml with the session's TARGETS_PORT, written in ``directory``."""
    source = Path(__file__).with_name("targets.yaml")
    path = directory / "targets.yaml"
    path.write_text(source.read_text().replace(f":{TEMPLATE_PORT}/", f":{TARGETS_PORT}/"))
    return path


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ThreadedServer:
    """An HTTP server with ``handler`` on a thread of its own while a ``with`` block runs."""

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler],
                 tls: ssl.SSLContext | None = None) -> None:
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet test output


class RecordingServer(ThreadedServer):
    """Answers 200 with a small JSON body unless ``script`` says otherwise for a path.

    Special paths: ``/redirect`` (302 to ``/landed``), ``/slow`` (waits ``slow_seconds``),
    ``/big`` (``big_bytes`` of body).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Seen] = []
        self.slow_seconds = 3.0
        self.big_bytes = 1024 * 1024
        self._scripts: dict[str, deque[int]] = defaultdict(deque)
        self.scheme = "https" if tls else "http"
        self._lock = threading.Lock()
        super().__init__(host, port, self._handler(), tls)

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def script(self, path: str, *statuses: int) -> None:
        """Answer the next requests to ``path`` with these statuses, then 200 again."""
        with self._lock:
            self._scripts[path].extend(statuses)

    def seen(self, path: str) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.path.split("?")[0] == path]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(QuietHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                with server._lock:
                    server.requests.append(Seen(self.command, self.path,
                                                dict(self.headers.items()), body))
                    scripted = server._scripts[path]
                    status = scripted.popleft() if scripted else 200
                if path == "/redirect":
                    self._send(302, b"", {"Location": server.url("/landed")})
                elif path == "/slow":
                    time.sleep(server.slow_seconds)
                    self._send(200, b"late")
                elif path == "/big":
                    self._send(200, b"x" * server.big_bytes)
                else:
                    # Echoes what it received, as some real services do in their errors.
                    self._send(status, json.dumps({"status": status, "path": path,
                                                   "headers": dict(self.headers.items()),
                                                   "echo": body.decode(errors="replace")}
                                                  ).encode(),
                               {"Content-Type": "application/json"})

            def _send(self, status: int, body: bytes,
                      headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # The client may stop reading (a bounded body): expected, not an error.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        return Handler
