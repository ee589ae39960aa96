"""SIGTERM to `integration serve` mid-burst: every 202 is in the broker, once; nothing else is."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from integration.messages.ownership import TAG_LENGTH
from integration.ops.embedded_redis import free_port
from integration.security.tokens import issue_token
from integration.settings import Settings
from integration.store.records import store_from_settings
from tests.conftest import ROOT, TEST_SECRET, wait_for
from tests.support.parked_types import PARKED_QUEUE

#: The owner tag a given id carries in the service (``integration.ownership``).
OWNER_TAG = re.compile(rf"\.[a-z2-7]{{{TAG_LENGTH}}}$")

GRACEFUL_TIMEOUT = 10


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    port: int
    log: Path


@pytest.fixture
def gateway(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[Gateway]:
    """`python -m integration serve` with two gevent workers and a type no worker consumes."""
    redis_client.delete(PARKED_QUEUE)
    port = free_port()
    env = {**os.environ, "INTEGRATION_REDIS_URL": redis_url,
           "INTEGRATION_JWT_SECRET": TEST_SECRET, "INTEGRATION_GATEWAY_WORKERS": "2",
           "INTEGRATION_GRACEFUL_TIMEOUT_SECONDS": str(GRACEFUL_TIMEOUT),
           "INTEGRATION_TYPE_MODULES": "tests.support.fault_types:TYPES,"
                                       "tests.support.parked_types:TYPES",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    log = tmp_path / "gateway.log"
    process = subprocess.Popen([sys.executable, "-m", "integration", "serve", "--port",
                                str(port)], cwd=ROOT, env=env, stdout=log.open("wb"),
                               stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _healthy(port), timeout=30, message=f"gateway up (log {log})")
        yield Gateway(process, port, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        redis_client.delete(PARKED_QUEUE)


def _healthy(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def _message(n: int) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "type": PARKED_QUEUE, "source": "shutdown-test",
            "data": {"n": n}}


@dataclass
class Attempt:
    """One request: the ids it carried and the answer (status per id) or the error."""

    ids: list[str]
    answered: dict[str, int] = field(default_factory=dict)
    error: str | None = None


class Sender(threading.Thread):
    """Posts single messages and batches on one keep-alive connection until the gateway
    refuses or drops it (a real client would then retry at another gateway)."""

    def __init__(self, port: int, subject: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.stop = port, stop
        self.token = issue_token(TEST_SECRET, subject, ["admin"], 600)
        self.attempts: list[Attempt] = []

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        n = 0
        while not self.stop.is_set():
            n += 1
            body: Any = [_message(n) for _ in range(25)] if n % 3 == 0 else _message(n)
            items = body if isinstance(body, list) else [body]
            attempt = Attempt([m["id"] for m in items])
            self.attempts.append(attempt)
            try:
                connection.request("POST", "/api/v1/messages", json.dumps(body), {
                    "Authorization": f"Bearer {self.token}",
                    "Content-Type": "application/json"})
                response = connection.getresponse()
                answer = json.loads(response.read() or b"null")
            except (OSError, http.client.HTTPException) as exc:
                attempt.error = repr(exc)
                connection.close()
                if self.stop.is_set() or _refused(self.port):
                    return
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            if isinstance(body, list) and response.status == 202:
                attempt.answered = {items[r["index"]]["id"]: r["status"]
                                    for r in answer["results"]}
            else:
                attempt.answered = dict.fromkeys(attempt.ids, response.status)
            if response.getheader("Connection", "").lower() == "close":
                connection.close()


def _queued_ids(client: redis.Redis) -> list[tuple[str, str]]:
    """(the id its sender gave, the message id) of each message in the parked queue, as
    many times as each was pushed."""
    found = []
    for raw in client.lrange(PARKED_QUEUE, 0, -1):
        message_id = json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0]["id"]
        found.append((OWNER_TAG.sub("", message_id), message_id))
    return found


def _answered(connection: socket.socket, request: bytes) -> bytes:
    """Send ``request`` on a keep-alive connection and read its whole answer."""
    connection.sendall(request)
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += connection.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += connection.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


def test_sigterm_mid_burst_loses_and_duplicates_nothing(
    gateway: Gateway, redis_client: redis.Redis, redis_url: str
) -> None:
    """SIGTERM in the middle of concurrent submissions: the listener closes, a request in
    flight still gets its 202, every 202 is in the broker exactly once, no message without
    a 202 answer unless its connection was cut, and gunicorn exits 0 within its timeout."""
    token = issue_token(TEST_SECRET, "slow-uploader", ["admin"], 600)
    # A request in flight across the SIGTERM: headers and half its body sent before it.
    slow = _message(0)
    body = json.dumps(slow).encode()
    uploader = socket.create_connection(("127.0.0.1", gateway.port), timeout=30)
    # A first request on the connection proves a worker accepted it: a connection still in a
    # listener's backlog when the listener closes is reset by the kernel, never in flight.
    _answered(uploader, b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
    uploader.sendall(
        f"POST /api/v1/messages HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}"
        f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:10])

    stop = threading.Event()
    senders = [Sender(gateway.port, f"sender-{i}", stop) for i in range(6)]
    for sender in senders:
        sender.start()
    wait_for(lambda: sum(len(s.attempts) for s in senders) >= 60, timeout=30,
             message="the burst under way")
    gateway.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    # No new connections, while the slow request is still being served.
    wait_for(lambda: _refused(gateway.port), timeout=5, message="the listener closed")
    uploader.sendall(body[10:])
    answer = b""
    while chunk := uploader.recv(65536):  # the server closes the connection after it
        answer += chunk
    uploader.close()
    assert answer.startswith(b"HTTP/1.1 202"), answer[:300]
    assert b"connection: close" in answer.lower(), "the in-flight client is told to go"

    assert gateway.process.wait(timeout=GRACEFUL_TIMEOUT + 5) == 0, "gunicorn exits 0"
    assert time.monotonic() - signalled < GRACEFUL_TIMEOUT, "within the graceful timeout"
    stop.set()
    for sender in senders:
        sender.join(timeout=10)
        assert not sender.is_alive()

    attempts = [a for s in senders for a in s.attempts]
    accepted = {i for a in attempts for i, status in a.answered.items() if status == 202}
    refused = {i: status for a in attempts for i, status in a.answered.items()
               if status != 202}
    unanswered = {i for a in attempts if a.error for i in a.ids}
    in_queue = _queued_ids(redis_client)
    queued = Counter(given for given, _ in in_queue)
    message_ids = dict(in_queue)

    assert len(accepted) > 60, "the burst was accepted up to the signal"
    assert not refused, f"answers other than 202: {Counter(refused.values())}"
    assert [i for i, n in queued.items() if n > 1] == [], "no message enqueued twice"
    assert accepted | {slow["id"]} <= queued.keys(), "every 202 is in the broker"
    assert queued.keys() - accepted - {slow["id"]} <= unanswered, \
        "a message is in the broker only if it was answered 202 or its connection was cut"
    store = store_from_settings(Settings(redis_url=redis_url, jwt_secret=TEST_SECRET))
    statuses = Counter(store.status_of(message_ids[i]) for i in accepted | {slow["id"]})
    assert set(statuses) == {"queued"}, statuses
    log = gateway.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
