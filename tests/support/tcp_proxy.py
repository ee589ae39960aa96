"""A small TCP proxy whose connections a test can cut and restore (a broker going away)."""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.accepting = threading.Event()
        self.accepting.set()
        self.answering = threading.Event()  # cleared: the target's bytes are held back
        self.answering.set()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.accepting.is_set():
                client.close()  # the "broker" is unreachable
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink, held in ((client, upstream, None),
                                       (upstream, client, self.answering)):
                threading.Thread(target=self._pump, args=(source, sink, held),
                                 daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket,
              held: threading.Event | None) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if held is not None:
                    held.wait()
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        self.accepting.clear()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def restore(self) -> None:
        self.accepting.set()

    def silence(self) -> None:
        """The target still receives everything but its answers are held back (a broker that
        stops confirming), until ``answer``."""
        self.answering.clear()

    def answer(self) -> None:
        self.answering.set()

    def close(self) -> None:
        self._closed = True
        self.answering.set()
        self.cut()
        self.listener.close()
