"""Shortened durability settings for fault tests, the bound they promise, and a downstream
that counts effects by ``Idempotency-Key`` as a well-behaved service would."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from integration.settings import Settings
from integration.worker.recovery import recovery_bound

#: The reconciler, heartbeats and claims at test speed (the defaults bound recovery at
#: minutes; these at seconds). The visibility timeout stays at its default: recovery must not
#: depend on it.
FAST_RECOVERY = {
    "INTEGRATION_RECONCILE_INTERVAL_SECONDS": "0.5",
    "INTEGRATION_RECONCILE_AFTER_SECONDS": "1.5",
    "INTEGRATION_WORKER_HEARTBEAT_SECONDS": "0.3",
    "INTEGRATION_CLAIM_LEASE_SECONDS": "3",
    "INTEGRATION_RETRY_POLL_INTERVAL_SECONDS": "0.2",
    # Effectful bursts to one target: no storm guard in the way.
    "INTEGRATION_ACTION_RATE_LIMIT": "100000/second",
    "INTEGRATION_LOOP_LIMIT": "1000",
}


def fast_bound() -> float:
    """The recovery bound FAST_RECOVERY promises, in seconds."""
    names = {f"INTEGRATION_{name.upper()}": name for name in Settings.model_fields}
    values = {names[k]: v for k, v in FAST_RECOVERY.items() if k in names}
    return recovery_bound(Settings(jwt_secret="x" * 40, **values)).seconds


class CountingTarget:
    """A downstream that performs each ``Idempotency-Key`` once: ``calls`` counts every
    request per key, ``effects`` the keys performed. Each call takes ``delay`` seconds, so
    calls are in flight when a fault lands. It listens on ``host`` (another host's workers
    reach it at the root namespace's bridge address)."""

    def __init__(self, delay: float = 0.05, host: str = "127.0.0.1") -> None:
        self.delay = delay
        self.host = host
        self.calls: Counter[str] = Counter()
        self.received = 0  # requests that arrived, finished or not
        self.unkeyed = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def effects(self) -> set[str]:
        with self._lock:
            return set(self.calls)

    def rules_file(self, directory: Path, name: str = "counting") -> Path:
        """A rules file declaring this target as the http target ``name``."""
        path = directory / "counting-rules.yaml"
        path.write_text(json.dumps({"targets": {name: {
            "executor": "http", "url": f"http://{self.host}:{self.port}/effect",
            "method": "POST", "timeout_seconds": 2}}}))
        return path

    def __enter__(self) -> CountingTarget:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        target = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                key = self.headers.get("Idempotency-Key")
                with target._lock:
                    target.received += 1
                time.sleep(target.delay)
                with target._lock:
                    if key is None:
                        target.unkeyed += 1
                    else:
                        target.calls[key] += 1
                    first = key is not None and target.calls[key] == 1
                body = json.dumps({"performed": first}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def action(index: int, source: str = "durability") -> dict[str, Any]:
    """An ``action`` message calling the counting target (a distinct action each, so loop
    detection never holds one)."""
    return {"type": "action", "source": source,
            "data": {"action": f"act-{index}", "target": "counting", "executor": "http"}}
