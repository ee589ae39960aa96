"""A small forwarding HTTP proxy in a thread: ``CONNECT`` tunnels, absolute-form requests are
forwarded; it records what it was asked and may demand credentials."""

from __future__ import annotations

import base64
import contextlib
import http.client
import select
import socket
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from tests.support.http_target import QuietHandler, ThreadedServer


@dataclass(frozen=True)
class Asked:
    """One request the proxy received: ``CONNECT host:port`` or a method and absolute URL."""

    method: str
    target: str
    authorization: str | None


class ForwardingProxy(ThreadedServer):
    """Forwards to wherever it is asked (tests only); ``user:password`` makes it answer 407
    to requests without those credentials; ``hosts`` is its own name resolution."""

    def __init__(self, credentials: str | None = None,
                 hosts: dict[str, str] | None = None) -> None:
        self.asked: list[Asked] = []
        self.hosts = hosts or {}
        self.expected = "Basic " + base64.b64encode(credentials.encode()).decode() \
            if credentials else None
        super().__init__("127.0.0.1", 0, self._handler())

    def url(self, credentials: str | None = None) -> str:
        return f"http://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(QuietHandler):
            def _allowed(self) -> bool:
                authorization = self.headers.get("Proxy-Authorization")
                proxy.asked.append(Asked(self.command, self.path, authorization))
                if proxy.expected is None or authorization == proxy.expected:
                    return True
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def do_CONNECT(self) -> None:  # noqa: N802
                if not self._allowed():
                    return
                host, _, port = self.path.rpartition(":")
                host = host.strip("[]")
                try:
                    upstream = socket.create_connection((proxy.hosts.get(host, host),
                                                         int(port)), timeout=5)
                except OSError:
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                sockets = [self.connection, upstream]
                with contextlib.suppress(OSError), upstream:
                    while True:
                        readable, _, _ = select.select(sockets, [], [], 5)
                        if not readable:
                            return
                        for sock in readable:
                            data = sock.recv(65536)
                            if not data:
                                return
                            (upstream if sock is self.connection else self.connection
                             ).sendall(data)

            def _forward(self) -> None:
                if not self._allowed():
                    return
                target = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("proxy-authorization", "connection")}
                host = target.hostname or ""
                upstream = http.client.HTTPConnection(proxy.hosts.get(host, host),
                                                      target.port or 80, timeout=5)
                path = target.path + (f"?{target.query}" if target.query else "")
                upstream.request(self.command, path, body=body, headers=headers)
                answer = upstream.getresponse()
                content = answer.read()
                self.send_response(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection",
                                            "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)
                upstream.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        return Handler
