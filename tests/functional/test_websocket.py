"""`GET /api/v1/ws` against a real gunicorn gateway, a real Redis and a real worker."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
import yaml
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from integration.ops.embedded_redis import free_port
from integration.security.tokens import issue_token
from tests.conftest import ROOT, TEST_SECRET, wait_for

#: Small on purpose: the slow-consumer test overflows it; ordinary tests stay far below.
MAX_BUFFER = 16
HEARTBEAT = 1.0


class Gateway:
    """A ``integration serve`` process (gunicorn, gevent workers) on a free port."""

    def __init__(self, redis_url: str, directory: Path, workers: int = 2,
                 **settings: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/api/v1/ws"
        self.log_path = directory / "gateway.log"
        env = {**os.environ, "INTEGRATION_REDIS_URL": redis_url,
               "INTEGRATION_JWT_SECRET": TEST_SECRET,
               "INTEGRATION_GATEWAY_WORKERS": str(workers),
               "PROMETHEUS_MULTIPROC_DIR": str(directory / "metrics"), **settings}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "integration", "serve", "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT)
        wait_for(lambda: http("GET", self.base + "/healthz")[0] == 200, timeout=30,
                 message=f"gateway up (log {self.log_path})")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def http(method: str, url: str, token: str | None = None,
         body: Any = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"null")
    except OSError:
        return 0, None


def token_for(subject: str, roles: list[str], ttl: int = 600) -> str:
    return issue_token(TEST_SECRET, subject, roles, ttl)


def alert(name: str) -> dict[str, Any]:
    return {"type": "alert", "source": "ws-test", "data": {"name": name}}


def recv_json(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def recv_until(ws: ClientConnection, predicate: Callable[[dict[str, Any]], bool],
               timeout: float = 20.0) -> list[dict[str, Any]]:
    """Frames up to and including the first that satisfies ``predicate``."""
    deadline = time.monotonic() + timeout
    frames = []
    while True:
        frames.append(recv_json(ws, max(0.1, deadline - time.monotonic())))
        if predicate(frames[-1]):
            return frames


def closed_with(ws: ClientConnection, timeout: float = 10.0) -> tuple[list[dict[str, Any]],
                                                                     ConnectionClosed]:
    """Every frame until the server closes the connection, and the close."""
    frames = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            frames.append(json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic()))))
    except ConnectionClosed as closed:
        return frames, closed


@contextmanager
def authed(gateway: Gateway, token: str, **options: Any) -> Iterator[ClientConnection]:
    """A socket authenticated by its upgrade request's Authorization header."""
    with connect(gateway.ws_url, additional_headers={"Authorization": f"Bearer {token}"},
                 open_timeout=10, **options) as ws:
        assert recv_json(ws)["type"] == "authenticated"
        yield ws


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped policy plus a role that watches its own alerts and one with a tiny budget."""
    shipped = files("integration.security").joinpath("default_policy.yaml")
    policy = yaml.safe_load(shipped.read_text())
    policy["roles"]["watcher"] = {"submit": ["alert"], "read": "own", "subscribe": ["alert.*"]}
    policy["roles"]["trickle"] = {"submit": ["alert"], "read": "own", "rate_limit": "3/minute"}
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


@pytest.fixture(scope="module")
def gateway(redis_url: str, policy_file: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    process = Gateway(redis_url, tmp_path_factory.mktemp("ws-gateway"),
                      INTEGRATION_POLICY_FILE=str(policy_file),
                      INTEGRATION_WS_MAX_BUFFER=str(MAX_BUFFER),
                      INTEGRATION_WS_HEARTBEAT_SECONDS=str(HEARTBEAT),
                      INTEGRATION_WS_AUTH_TIMEOUT_SECONDS="1",
                      INTEGRATION_WS_SEND_TIMEOUT_SECONDS="10",
                      INTEGRATION_WS_READ_BLOCK_MS="200",
                      # Expiry tests wait for exp plus the leeway.
                      INTEGRATION_JWT_LEEWAY_SECONDS="1")
    yield process
    assert process.stop() == 0, "gunicorn stops cleanly on SIGTERM"


# -- authentication -------------------------------------------------------------------------

def test_without_a_token_the_socket_gets_a_401_frame_and_is_closed(gateway: Gateway) -> None:
    """A socket that never authenticates gets a 401 problem frame and close 1008."""
    with connect(gateway.ws_url, open_timeout=10) as ws:
        frames, closed = closed_with(ws)
    assert [f["type"] for f in frames] == ["error"]
    assert frames[0]["problem"]["status"] == 401
    assert frames[0]["problem"]["type"] == "/problems/unauthorized"
    assert closed.rcvd is not None and closed.rcvd.code == 1008


def test_a_first_frame_other_than_auth_is_refused(gateway: Gateway) -> None:
    """Subscribing before authenticating is refused with 401 and close 1008."""
    with connect(gateway.ws_url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": ["*"]}))
        frames, closed = closed_with(ws)
    assert frames[0]["problem"]["status"] == 401
    assert closed.rcvd is not None and closed.rcvd.code == 1008


@pytest.mark.parametrize("token, detail", [
    ("not-a-jwt", "invalid"),
    (jwt.encode({"sub": "late", "roles": ["admin"], "exp": int(time.time()) - 600,
                 "type": "access", "jti": "x1"}, TEST_SECRET, algorithm="HS256"), "expired"),
    (issue_token("another-secret-" + "y" * 40, "forger", ["admin"], 600), "invalid"),
])
def test_a_bad_or_expired_header_token_is_refused_with_401(gateway: Gateway, token: str,
                                                           detail: str) -> None:
    """A bad or expired bearer token on the upgrade is a 401 problem; no socket opens."""
    with pytest.raises(InvalidStatus) as refused:
        connect(gateway.ws_url, additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=10)
    response = refused.value.response
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/problem+json"
    assert detail in json.loads(response.body)["detail"]


@pytest.mark.parametrize("bad_token", ["not-a-jwt", "expired"])
def test_a_bad_auth_frame_is_refused(gateway: Gateway, bad_token: str) -> None:
    """An invalid or expired token in the auth frame gets a 401 frame and close 1008."""
    token = bad_token if bad_token != "expired" else jwt.encode(
        {"sub": "late", "roles": ["admin"], "exp": int(time.time()) - 600, "type": "access",
         "jti": "x2"}, TEST_SECRET, algorithm="HS256")
    with connect(gateway.ws_url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": token}))
        frames, closed = closed_with(ws)
    assert frames[0]["type"] == "error" and frames[0]["problem"]["status"] == 401
    assert closed.rcvd is not None and closed.rcvd.code == 1008


@pytest.mark.parametrize(("kind", "detail"), [("revoked", "revoked"), ("refresh", "invalid")])
def test_an_auth_frame_gets_the_checks_of_a_rest_request(gateway: Gateway, kind: str,
                                                         detail: str) -> None:
    """A revoked token, or a refresh token, in the auth frame is refused as REST refuses it."""
    from integration.security.tokens import unverified_claims

    if kind == "revoked":
        token = token_for("revoked-first", ["admin"])
        jti = unverified_claims(token)["jti"]
        admin = token_for("token-admin", ["admin"])
        assert http("DELETE", f"{gateway.base}/api/v1/tokens/{jti}", admin)[0] == 204
    else:
        token = jwt.encode({"sub": "refresher", "roles": ["admin"], "type": "refresh",
                            "exp": int(time.time()) + 600, "jti": "r1"}, TEST_SECRET,
                           algorithm="HS256")
    assert http("GET", f"{gateway.base}/api/v1/types", token)[0] == 401
    with connect(gateway.ws_url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": token}))
        frames, closed = closed_with(ws)
    assert frames[0]["type"] == "error" and frames[0]["problem"]["status"] == 401
    assert detail in frames[0]["problem"]["detail"]
    assert closed.rcvd is not None and closed.rcvd.code == 1008


@pytest.mark.parametrize("parameter", ["token", "jwt"])
def test_a_token_in_the_query_string_is_refused(gateway: Gateway, parameter: str) -> None:
    """A token in the URL is refused with 401, even a valid one (URLs end up in logs)."""
    token = token_for("leaky", ["admin"])
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{gateway.ws_url}?{parameter}={token}", open_timeout=10)
    assert refused.value.response.status_code == 401
    assert "URL" in json.loads(refused.value.response.body)["detail"]
    assert token not in gateway.log_path.read_text(errors="replace")


def test_auth_by_first_frame_opens_the_session(gateway: Gateway) -> None:
    """A browser-style client authenticates with its first frame, then may subscribe."""
    with connect(gateway.ws_url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": token_for("browser", ["reader"])}))
        assert recv_json(ws) == {"type": "authenticated", "subject": "browser",
                                 "roles": ["reader"]}
        ws.send(json.dumps({"type": "subscribe", "id": 7, "topics": ["*.dead"]}))
        assert recv_json(ws) == {"type": "subscribed", "ref": 7, "topics": ["*.dead"]}
        ws.send(json.dumps({"type": "ping", "id": "p"}))
        assert recv_json(ws) == {"type": "pong", "ref": "p"}


# -- authorization ----------------------------------------------------------------------------

@pytest.mark.parametrize("roles, topic", [
    (["diagnosis"], "*"), (["diagnosis"], "action.*"), (["diagnosis"], "a*"),
    (["monitoring"], "metric.*"),
])
def test_a_forbidden_topic_is_refused_with_403(gateway: Gateway, roles: list[str],
                                               topic: str) -> None:
    """A pattern the role's policy does not cover is an error frame with a 403 problem."""
    with authed(gateway, token_for("limited", roles)) as ws:
        ws.send(json.dumps({"type": "subscribe", "id": 1, "topics": [topic]}))
        refused = recv_json(ws)
        assert refused["type"] == "error" and refused["ref"] == 1
        assert refused["problem"]["status"] == 403
        # The connection stays usable for what the role may do.
        ws.send(json.dumps({"type": "ping"}))
        assert recv_json(ws)["type"] == "pong"


def test_a_granted_narrower_pattern_is_accepted(gateway: Gateway) -> None:
    """A pattern inside a granted one (alert.s* within alert.*) is accepted."""
    with authed(gateway, token_for("diag", ["diagnosis"])) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": ["alert.s*", "metric.*"]}))
        assert recv_json(ws) == {"type": "subscribed", "topics": ["alert.s*", "metric.*"]}


# -- events -----------------------------------------------------------------------------------

def test_a_subscriber_receives_the_events_of_submitted_messages_in_order(
    gateway: Gateway, worker: Any, redis_client: redis.Redis
) -> None:
    """Each submitted alert's alert.succeeded event arrives, in the event log's order."""
    token = token_for("watch-all", ["admin"])
    with authed(gateway, token) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": ["alert.*"]}))
        assert recv_json(ws)["type"] == "subscribed"
        ids = []
        for n in range(4):
            status, body = http("POST", gateway.base + "/api/v1/messages", token, alert(f"o{n}"))
            assert status == 202
            ids.append(body["id"])
        pending = set(ids)
        events = []
        while pending:
            frame = recv_json(ws, timeout=20)
            assert frame["type"] == "event"
            events.append(frame)
            pending.discard(frame["message_id"])
    mine = [e for e in events if e["message_id"] in ids]
    assert {e["topic"] for e in mine} == {"alert.succeeded"}
    assert all(e["event"]["type"] == "alert.succeeded" and e["event"]["specversion"] == "1.0"
               and e["event"]["data"]["message_id"] == e["message_id"] for e in mine)
    # Delivered in the stream's order, none skipped.
    stream = [(f[b"message_id"].decode(), f[b"topic"].decode())
              for _, f in redis_client.xrange("integration:events")]
    received = [(e["message_id"], e["topic"]) for e in events]
    start = stream.index(received[0])
    assert [s for s in stream[start:] if s[1].startswith("alert.")][:len(received)] == received


def test_read_scope_own_receives_only_its_own_messages_events(gateway: Gateway,
                                                              worker: Any) -> None:
    """With read: own, a subscriber gets its own messages' events, never another owner's."""
    ann, bob = token_for("ann", ["watcher"]), token_for("bob", ["watcher"])
    with authed(gateway, ann) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": ["alert.*"]}))
        assert recv_json(ws)["type"] == "subscribed"
        _, theirs = http("POST", gateway.base + "/api/v1/messages", bob, alert("bob's"))
        _, mine = http("POST", gateway.base + "/api/v1/messages", ann, alert("ann's"))
        frame = recv_json(ws, timeout=20)
        assert frame["message_id"] == mine["id"]
        # Bob's finished too (before or after ann's), and was never sent here.
        wait_for(lambda: http("GET", f"{gateway.base}/api/v1/messages/{theirs['id']}",
                              bob)[1]["status"] == "succeeded")
        ws.send(json.dumps({"type": "ping"}))
        assert recv_json(ws)["type"] == "pong"


# -- submissions -----------------------------------------------------------------------------

def test_a_message_submitted_over_the_socket_is_acked_and_succeeds(gateway: Gateway,
                                                                    worker: Any) -> None:
    """A submit frame gets an ack with the id and status URL; the message then succeeds."""
    token = token_for("ws-sender", ["admin"])
    with authed(gateway, token) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": ["alert.succeeded"]}))
        assert recv_json(ws)["type"] == "subscribed"
        ws.send(json.dumps({"type": "submit", "id": "r1", "message": alert("socket")}))
        ack = recv_json(ws)
        assert ack["type"] == "ack" and ack["ref"] == "r1" and ack["status"] == "queued"
        assert ack["status_url"] == f"/api/v1/messages/{ack['id']}"
        event = recv_until(ws, lambda f: f.get("message_id") == ack["id"])[-1]
        assert event["topic"] == "alert.succeeded"
    status, record = http("GET", gateway.base + ack["status_url"], token)
    assert status == 200 and record["status"] == "succeeded"
    assert record["channel"] == "websocket" and record["owner"] == "ws-sender"


def test_a_submit_frames_trace_context_travels_with_its_messages(
        gateway: Gateway, redis_client: redis.Redis) -> None:
    """A frame's ``traceparent`` (else the upgrade request's) is carried in the envelope."""
    upgrade = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    own = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {"Authorization": f"Bearer {token_for('ws-tracer', ['admin'])}",
               "traceparent": upgrade}
    with connect(gateway.ws_url, additional_headers=headers, open_timeout=10) as ws:
        assert recv_json(ws)["type"] == "authenticated"
        ws.send(json.dumps({"type": "submit", "message": alert("own"), "traceparent": own}))
        first = recv_json(ws)
        ws.send(json.dumps({"type": "submit", "message": alert("upgrade")}))
        second = recv_json(ws)
    for ack, expected in ((first, own), (second, upgrade)):
        envelope = redis_client.hget(f"integration:msg:{ack['id']}", "envelope")
        assert envelope is not None and json.loads(envelope)["traceparent"] == expected


def test_an_invalid_message_gets_a_422_error_frame(gateway: Gateway) -> None:
    """An invalid message is an error frame with the 422 problem REST would return."""
    with authed(gateway, token_for("ws-sender", ["admin"])) as ws:
        ws.send(json.dumps({"type": "submit", "id": "bad",
                            "message": {"type": "alert", "source": "x", "data": {}}}))
        error = recv_json(ws)
    assert error["type"] == "error" and error["ref"] == "bad"
    problem = error["problem"]
    assert problem["status"] == 422 and problem["type"] == "/problems/invalid-message"
    assert problem["errors"][0]["loc"] == [0, "data", "name"]


def test_text_the_store_cannot_write_gets_an_error_frame_and_the_socket_stays_open(
        gateway: Gateway) -> None:
    """A lone surrogate in a message is a 422 error frame naming the field; the same socket
    then submits a valid message."""
    with authed(gateway, token_for("ws-sender", ["admin"])) as ws:
        ws.send('{"type": "submit", "id": "lone", "message": {"type": "event", '
                '"source": "x", "data": {"note": "\\ud800"}}}')
        error = recv_json(ws)
        ws.send(json.dumps({"type": "submit", "id": "after", "message": alert("after")}))
        ack = recv_json(ws)
    assert error["type"] == "error" and error["ref"] == "lone"
    assert error["problem"]["status"] == 422
    assert error["problem"]["errors"][0]["loc"] == [0, "data", "note"]
    assert error["problem"]["errors"][0]["type"] == "string_unicode"
    assert ack["type"] == "ack" and ack["ref"] == "after"


def test_a_batch_gets_one_answer_per_message_and_the_policy_applies(gateway: Gateway) -> None:
    """A list gets an ack or error per item, by index; a type the role may not send is 403."""
    with authed(gateway, token_for("monitor", ["monitoring"])) as ws:
        ws.send(json.dumps({"type": "submit", "id": "b", "message": [
            alert("one"), {"type": "action", "source": "x", "data": {}}]}))
        first, second = recv_json(ws), recv_json(ws)
    assert first["type"] == "ack" and first["index"] == 0
    assert second["type"] == "error" and second["index"] == 1
    assert second["problem"]["status"] == 403


def test_submit_frames_spend_the_subjects_rate_limit(gateway: Gateway) -> None:
    """The upgrade and each submit frame count against the subject's API budget: past it, a
    429 error frame with retry_after, and nothing is enqueued."""
    with authed(gateway, token_for("trickler", ["trickle"])) as ws:  # 1 of 3
        answers = []
        for n in range(3):
            ws.send(json.dumps({"type": "submit", "id": n, "message": alert(f"t{n}")}))
            answers.append(recv_json(ws))
    assert [a["type"] for a in answers] == ["ack", "ack", "error"]
    problem = answers[2]["problem"]
    assert problem["status"] == 429 and problem["type"] == "/problems/too-many-requests"
    assert answers[2]["retry_after"] >= 1


def test_socket_submissions_are_counted_on_the_websocket_channel(gateway: Gateway) -> None:
    """integration_messages_received_total counts socket submissions with channel websocket."""
    with authed(gateway, token_for("counted", ["admin"])) as ws:
        ws.send(json.dumps({"type": "submit", "message": alert("count me")}))
        assert recv_json(ws)["type"] == "ack"
    # A gateway started without a metrics port serves /metrics itself.
    status, text = 0, ""
    request = urllib.request.Request(gateway.base + "/metrics")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        status, text = response.status, response.read().decode()
    assert status == 200
    assert 'channel="websocket"' in text and 'outcome="accepted"' in text


def test_sockets_frames_and_closes_are_counted(gateway: Gateway) -> None:
    """The gateway's WebSocket metrics: open sockets, frames by kind, closes by code."""
    def sample(name: str, labels: str = "") -> float:
        with urllib.request.urlopen(gateway.base + "/metrics", timeout=10) as response:  # noqa: S310
            text = response.read().decode()
        found = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    before = {kind: sample("integration_websocket_frames_total", f'{{kind="{kind}"}}')
              for kind in ("ping", "unknown")}
    closed = sample("integration_websocket_closed_total", '{code="1000"}')
    with authed(gateway, token_for("metered", ["admin"])) as ws:
        assert sample("integration_websocket_connections") >= 1
        ws.send(json.dumps({"type": "ping", "id": "p"}))
        recv_json(ws)
        ws.send(json.dumps({"type": "dance"}))
        assert recv_json(ws)["type"] == "error"
    wait_for(lambda: sample("integration_websocket_closed_total", '{code="1000"}') == closed + 1,
             message="the close counted")
    assert sample("integration_websocket_frames_total", '{kind="ping"}') == before["ping"] + 1
    assert sample("integration_websocket_frames_total", '{kind="unknown"}') == \
        before["unknown"] + 1
    assert sample("integration_websocket_connections") == 0


# -- capacity, heartbeats, slow consumers, shutdown ---------------------------------------

def test_200_idle_sockets_leave_http_submissions_prompt(gateway: Gateway) -> None:
    """200 open WebSockets do not hold up HTTP: submissions all get 202 within bounds."""
    token = token_for("crowd", ["admin"])
    count = 200
    opened = threading.Event()
    release = threading.Event()
    outcome: dict[str, Any] = {}

    async def hold() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        sockets = []
        for _ in range(count):  # one after another: a burst would only test the accept queue
            ws = await connect_async(gateway.ws_url, additional_headers=headers,
                                     open_timeout=20)
            assert json.loads(await ws.recv())["type"] == "authenticated"
            sockets.append(ws)
        opened.set()
        while not release.is_set():
            await asyncio.sleep(0.05)
        # Every socket is still alive (heartbeats answered) and answers a ping frame.
        for ws in sockets:
            await ws.send(json.dumps({"type": "ping"}))
        outcome["pongs"] = sum(
            [json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "pong"
             for ws in sockets])
        for ws in sockets:
            await ws.close()

    holder = threading.Thread(target=lambda: asyncio.run(hold()), daemon=True)
    holder.start()
    assert opened.wait(60), "200 sockets opened"

    def submit(n: int) -> tuple[int, float]:
        started = time.perf_counter()
        status, _ = http("POST", gateway.base + "/api/v1/messages", token, alert(f"c{n}"))
        return status, time.perf_counter() - started

    time.sleep(2.5 * HEARTBEAT)  # the sockets live through heartbeats, not just a handshake
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(submit, range(48)))
    release.set()
    holder.join(60)
    assert [status for status, _ in results] == [202] * 48
    latencies = sorted(seconds for _, seconds in results)
    assert latencies[-1] < 3.0, latencies
    assert latencies[len(latencies) // 2] < 1.0, latencies
    assert outcome["pongs"] == count


def _raw_upgrade(gateway: Gateway, token: str) -> socket.socket:
    """A client that completes the handshake and then never reads nor answers pings."""
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n")
                 .encode())
    assert sock.recv(12) == b"HTTP/1.1 101"
    return sock


def test_a_client_that_stops_answering_heartbeats_is_dropped(gateway: Gateway) -> None:
    """A client that answers no ping is disconnected after two heartbeat intervals."""
    sock = _raw_upgrade(gateway, token_for("silent", ["admin"]))
    started = time.monotonic()
    received = b""
    try:
        while chunk := sock.recv(65536):  # returns b"" once the server has closed
            received += chunk
    finally:
        sock.close()
    assert time.monotonic() - started < 2 * HEARTBEAT + 5
    assert b"\x88" in received  # a close frame came before the end of the stream
    assert b"heartbeat" in received


def test_a_slow_consumer_is_disconnected_while_others_keep_up(
    gateway: Gateway, redis_client: redis.Redis
) -> None:
    """A subscriber that stops reading is closed with 1013 once its buffer is full; a
    subscriber that reads gets every event."""
    token = token_for("firehose", ["admin"])
    topic, count, batch, payload = "bulk.succeeded", 200, 8, "x" * 100_000
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # little for the kernel to hold
    raw.connect(("127.0.0.1", gateway.port))
    with authed(gateway, token, sock=raw, max_queue=1) as slow, authed(gateway, token) as fast:
        for ws in (slow, fast):
            ws.send(json.dumps({"type": "subscribe", "topics": ["bulk.*"]}))
            assert recv_json(ws)["type"] == "subscribed"
        received = []
        # Appended in steps the reading client keeps up with (each once it has the one
        # before); 20 MB in all, far more than the kernel holds for the client that does not.
        for step in range(0, count, batch):
            pipe = redis_client.pipeline(transaction=False)
            for n in range(step, step + batch):
                event = {"specversion": "1.0", "id": f"bulk-{n}", "type": topic, "data": payload}
                pipe.xadd("integration:events", {"topic": topic, "message_id": f"bulk-{n}",
                                                 "event": json.dumps(event)})
            pipe.execute()
            received += [recv_json(fast, timeout=30)["message_id"] for _ in range(batch)]
        assert received == [f"bulk-{n}" for n in range(count)]

        frames, closed = closed_with(slow, timeout=30)
    assert closed.rcvd is not None and closed.rcvd.code == 1013
    assert "slow consumer" in closed.rcvd.reason
    assert frames[-1]["type"] == "error"
    assert frames[-1]["problem"]["type"] == "/problems/slow-consumer"
    assert len([f for f in frames if f["type"] == "event"]) < count


def test_a_burst_of_upgrades_never_passes_the_connection_limit(
    redis_url: str, tmp_path: Path
) -> None:
    """Upgrades that arrive together are admitted up to WS_MAX_CONNECTIONS and no further
    (the place is taken before the handshake is answered); the rest get 503."""
    own = Gateway(redis_url, tmp_path, workers=1, INTEGRATION_WS_MAX_CONNECTIONS="3")
    token = token_for("burst", ["admin"])
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
               ).encode()
    sockets = [socket.create_connection(("127.0.0.1", own.port), timeout=10)
               for _ in range(12)]
    try:
        start = threading.Barrier(len(sockets))

        def upgrade(sock: socket.socket) -> bytes:
            start.wait()
            sock.sendall(request)
            return sock.recv(12)

        with ThreadPoolExecutor(max_workers=len(sockets)) as pool:
            answers = list(pool.map(upgrade, sockets))
        assert answers.count(b"HTTP/1.1 101") == 3, answers
        assert answers.count(b"HTTP/1.1 503") == len(sockets) - 3, answers
    finally:
        for sock in sockets:
            sock.close()
        own.stop()


def test_sigterm_closes_open_sockets_with_1001_and_stops_promptly(
    redis_url: str, tmp_path: Path
) -> None:
    """On SIGTERM, open sockets get close 1001 and gunicorn exits well before its timeout."""
    own = Gateway(redis_url, tmp_path, workers=1)
    try:
        with authed(own, token_for("stay", ["admin"])) as ws:
            started = time.monotonic()
            own.process.send_signal(signal.SIGTERM)
            _, closed = closed_with(ws, timeout=20)
        assert closed.rcvd is not None and closed.rcvd.code == 1001
        assert own.process.wait(timeout=20) == 0
        assert time.monotonic() - started < 10
    finally:
        if own.process.poll() is None:
            own.process.kill()


def test_a_token_revoked_while_its_socket_is_open_closes_it(gateway: Gateway) -> None:
    """Revoking a token ends the sockets already open with it (401 frame, close 1008)."""
    from integration.security.tokens import unverified_claims

    token = token_for("revoked-later", ["admin"])
    admin = token_for("token-admin", ["admin"])
    with authed(gateway, token) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": ["alert.*"]}))
        assert recv_json(ws)["type"] == "subscribed"
        jti = unverified_claims(token)["jti"]
        assert http("DELETE", f"{gateway.base}/api/v1/tokens/{jti}", admin)[0] == 204
        frames, closed = closed_with(ws, timeout=10)
    assert frames[-1]["type"] == "error" and frames[-1]["problem"]["status"] == 401
    assert "revoked" in frames[-1]["problem"]["detail"]
    assert closed.rcvd is not None and closed.rcvd.code == 1008


# -- one claim validation with REST: times, revocation by subject, no grants ----------------

def jti_less_token(subject: str, roles: list[str], ttl: int = 600, **claims: Any) -> str:
    """A token without a jti, as many identity providers issue them."""
    now = int(time.time())
    payload = {"sub": subject, "roles": roles, "iat": now, "exp": now + ttl,
               "type": "access", **claims}
    return jwt.encode(payload, TEST_SECRET, algorithm="HS256")


def test_a_numeric_string_exp_is_refused_on_the_socket_as_on_rest(gateway: Gateway) -> None:
    """A token whose exp is a numeric string gets the REST 401 on the upgrade and in the
    auth frame; it never opens a session that would outlive its expiry."""
    token = jti_less_token("stringly", ["admin"], exp=str(int(time.time()) + 3))
    assert http("GET", f"{gateway.base}/api/v1/types", token)[0] == 401
    with pytest.raises(InvalidStatus) as refused:
        connect(gateway.ws_url, additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=10)
    assert refused.value.response.status_code == 401
    assert "exp must be a number" in json.loads(refused.value.response.body)["detail"]
    with connect(gateway.ws_url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": token}))
        frames, closed = closed_with(ws)
    assert frames[0]["problem"]["status"] == 401
    assert "exp must be a number" in frames[0]["problem"]["detail"]
    assert closed.rcvd is not None and closed.rcvd.code == 1008


def test_a_socket_closes_with_1008_when_its_token_expires(gateway: Gateway) -> None:
    """At exp plus the leeway (when REST would refuse the token) the socket gets a 401
    frame and close 1008."""
    with authed(gateway, token_for("short-lived", ["reader"], ttl=1)) as ws:
        frames, closed = closed_with(ws, timeout=10)
    assert frames[-1]["problem"]["status"] == 401
    assert "expired" in frames[-1]["problem"]["detail"]
    assert closed.rcvd is not None and closed.rcvd.code == 1008


def test_revoking_a_subject_closes_its_sockets_with_or_without_a_jti(gateway: Gateway) -> None:
    """A subject revoked while its sockets are open: every socket of its earlier tokens,
    those without a jti too, gets a 401 frame and close 1008."""
    admin = token_for("token-admin", ["admin"])
    with authed(gateway, jti_less_token("leaver", ["reader"])) as plain, \
            authed(gateway, token_for("leaver", ["reader"])) as with_jti:
        status, body = http("POST", f"{gateway.base}/api/v1/tokens/revocations", admin,
                            {"subject": "leaver"})
        assert status == 200, body
        for ws in (plain, with_jti):
            frames, closed = closed_with(ws, timeout=10)
            assert frames[-1]["problem"]["status"] == 401
            assert "revoked" in frames[-1]["problem"]["detail"]
            assert closed.rcvd is not None and closed.rcvd.code == 1008


def test_a_token_that_grants_nothing_is_refused_with_403(gateway: Gateway) -> None:
    """A token whose roles grant nothing gets the same 403 as on REST: on the upgrade, and
    in the auth frame (then close 1008)."""
    token = token_for("nobody", ["no-such-role"])
    with pytest.raises(InvalidStatus) as refused:
        connect(gateway.ws_url, additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=10)
    assert refused.value.response.status_code == 403
    with connect(gateway.ws_url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": token}))
        frames, closed = closed_with(ws)
    assert frames[0]["problem"]["status"] == 403
    assert frames[0]["problem"]["permission"] == "any"
    assert closed.rcvd is not None and closed.rcvd.code == 1008
