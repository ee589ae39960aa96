"""One trace across processes: a client's traceparent, a real gateway and worker exporting to
an OTLP/HTTP receiver served here, and a declared http target that receives the trace."""

from __future__ import annotations

import gzip
import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from integration.ops.embedded_redis import EmbeddedRedis
from integration.security.tokens import issue_token
from integration.settings import Settings
from integration.store.keys import Keys
from tests.conftest import TEST_SECRET, WorkerProcess, wait_for
from tests.functional.test_websocket import Gateway
from tests.support.http_target import TARGETS_PORT, RecordingServer

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


class Receiver:
    """An OTLP/HTTP trace receiver: keeps every span it is sent, with its service name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []
        lock, spans = threading.Lock(), self.spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                with lock:
                    for resource in request.resource_spans:
                        service = next(a.value.string_value for a in resource.resource.attributes
                                       if a.key == "service.name")
                        spans.extend((service, s) for scope in resource.scope_spans
                                     for s in scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def named(self, name: str, service: str) -> Span | None:
        """The first span of that name and service in the client's trace: the worker's own
        publishes (the result event) also make ``enqueue`` spans in that trace."""
        return next((s for svc, s in list(self.spans)
                     if s.name == name and svc == service and s.trace_id.hex() == CLIENT_TRACE),
                    None)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def traced(private_redis: EmbeddedRedis, receiver: Receiver,
           tmp_path: Path) -> Iterator[Gateway]:
    """A gateway and a worker of their own Redis (no untraced worker takes the message),
    exporting spans to ``receiver`` at once."""
    tracing = {"INTEGRATION_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
               "INTEGRATION_REDIS_URL": private_redis.url, "INTEGRATION_METRICS_PORT": "0"}
    worker = WorkerProcess(["action", "default"], tmp_path / "worker.log", concurrency=1,
                           env=tracing)
    gateway = Gateway(private_redis.url, tmp_path, workers=1, **tracing)
    yield gateway
    gateway.stop()
    worker.stop()


def _call(method: str, url: str, token: str, body: Any = None,
          headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}",
                 **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return int(response.status), json.loads(response.read())


def test_one_trace_runs_from_the_client_to_the_action_target(
        traced: Gateway, receiver: Receiver, tmp_path: Path) -> None:
    """client → submit (SERVER) → process (CONSUMER) → handler → the http call (CLIENT), in
    the client's trace; the target receives a traceparent of that trace and call, and the
    worker's log lines within the spans carry the trace id."""
    token = issue_token(TEST_SECRET, "tracer", ["admin"], 600)
    with RecordingServer("127.0.0.1", TARGETS_PORT) as target:
        status, reply = _call("POST", traced.base + "/api/v1/messages", token, {
            "type": "action", "source": "tracing-test",
            "data": {"action": "restart-traced", "target": "test-restart", "executor": "http",
                     "parameters": {"replicas": 1}}},
            {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "client=1"})
        assert status == 202, reply
        record = wait_for(lambda: (lambda r: r if r["status"] in ("succeeded", "dead") else None)(
            _call("GET", traced.base + f"/api/v1/messages/{reply['id']}", token)[1]),
            timeout=20, message="the action processed")
        assert record["status"] == "succeeded", record.get("error")
        [call] = target.seen("/restart")

    services = {"submit": "integration-gateway", "enqueue": "integration-gateway",
                "process": "integration-worker", "handler": "integration-worker",
                "PUT": "integration-worker"}
    wait_for(lambda: all(receiver.named(n, s) for n, s in services.items()), timeout=10,
             message=f"spans {sorted(services)} exported")
    found = {n: receiver.named(n, s) for n, s in services.items()}
    spans = {n: span for n, span in found.items() if span is not None}

    def parent(name: str) -> str:
        return spans[name].parent_span_id.hex()

    assert parent("submit") == CLIENT_SPAN and spans["submit"].kind == Span.SPAN_KIND_SERVER
    assert parent("enqueue") == spans["submit"].span_id.hex()
    assert spans["enqueue"].kind == Span.SPAN_KIND_PRODUCER
    assert parent("process") == spans["submit"].span_id.hex()
    assert spans["process"].kind == Span.SPAN_KIND_CONSUMER
    assert parent("handler") == spans["process"].span_id.hex()
    assert parent("PUT") == spans["handler"].span_id.hex()
    assert spans["PUT"].kind == Span.SPAN_KIND_CLIENT
    assert call.headers["traceparent"] == \
        f"00-{CLIENT_TRACE}-{spans['PUT'].span_id.hex()}-01"
    assert call.headers["tracestate"] == "client=1"
    assert f'"trace_id":"{CLIENT_TRACE}"' in (tmp_path / "worker.log").read_text()


# -- the context travels with the message, tracing off ----------------------------------------

TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
ALERT = {"type": "alert", "source": "t", "data": {"name": "x"}}


def _recorded(redis_client: redis.Redis, settings: Settings, message_id: str) -> dict[str, Any]:
    raw = redis_client.hget(Keys(settings.key_prefix).record(message_id), "envelope")
    assert raw is not None
    return dict(json.loads(raw))


def test_a_requests_traceparent_is_carried_in_the_envelope(
        client: FlaskClient, auth: dict[str, str], redis_client: redis.Redis,
        settings: Settings) -> None:
    """Untraced, the gateway passes the request's context on unchanged, in every mode."""
    plain = client.post("/api/v1/messages", json=ALERT,
                        headers={**auth, "traceparent": TRACEPARENT, "tracestate": "a=1"})
    binary = client.post("/api/v1/messages", data=b'{"name": "x"}', headers={
        **auth, "traceparent": TRACEPARENT, "ce-specversion": "1.0", "ce-id": "tp-binary-1",
        "ce-source": "t", "ce-type": "alert", "Content-Type": "application/json"})
    for response in (plain, binary):
        assert response.status_code == 202, response.get_json()
        envelope = _recorded(redis_client, settings, response.get_json()["id"])
        assert envelope["traceparent"] == TRACEPARENT
    assert _recorded(redis_client, settings, plain.get_json()["id"])["tracestate"] == "a=1"


def test_an_invalid_traceparent_header_is_ignored(
        client: FlaskClient, auth: dict[str, str], redis_client: redis.Redis,
        settings: Settings) -> None:
    """As W3C Trace Context says: the message is accepted and starts no trace of its own."""
    response = client.post("/api/v1/messages", json=ALERT,
                           headers={**auth, "traceparent": "00-not-a-context-01"})
    assert response.status_code == 202
    assert "traceparent" not in _recorded(redis_client, settings, response.get_json()["id"])


def test_an_invalid_traceparent_attribute_is_a_422(client: FlaskClient,
                                                    auth: dict[str, str]) -> None:
    """An envelope's own Distributed Tracing attribute is checked like its other attributes."""
    response = client.post("/api/v1/messages", headers=auth, json={
        **ALERT, "traceparent": TRACEPARENT.upper()})
    assert response.status_code == 422
    assert "traceparent" in json.dumps(response.get_json())
