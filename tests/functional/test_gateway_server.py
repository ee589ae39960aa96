"""`integration serve`: gunicorn with several workers, metrics aggregated and kept private."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from integration.ops.embedded_redis import free_port
from integration.security.tokens import issue_token
from tests.conftest import ROOT, TEST_SECRET, wait_for


def fetch(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),  # noqa: S310
                                    timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except OSError:
        return 0, ""


#: The gunicorn master of each running ``gateway``, by URL.
SERVERS: dict[str, subprocess.Popen[bytes]] = {}


@pytest.fixture
def gateway(redis_url: str, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A gateway with two gunicorn workers and metrics on a port of their own; its URL, its
    metrics URL and its metrics directory (the log beside it)."""
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "INTEGRATION_REDIS_URL": redis_url,
           "INTEGRATION_JWT_SECRET": TEST_SECRET, "INTEGRATION_GATEWAY_WORKERS": "2",
           "INTEGRATION_GATEWAY_METRICS_PORT": str(metrics_port),
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    process = subprocess.Popen([sys.executable, "-m", "integration", "serve", "--port",
                                str(port)], cwd=ROOT, env=env,
                               stdout=(tmp_path / "gateway.log").open("wb"),
                               stderr=subprocess.STDOUT)
    SERVERS[f"http://127.0.0.1:{port}"] = process
    base, metrics = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        wait_for(lambda: fetch(base + "/healthz")[0] == 200 and fetch(metrics)[0] == 200,
                 timeout=30, message="gateway and its metrics endpoint")
        yield base, metrics, tmp_path / "metrics"
    finally:
        SERVERS.pop(base, None)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        assert code == 0, "gunicorn stops cleanly on SIGTERM:\n" + \
            (tmp_path / "gateway.log").read_text(errors="replace")[-3000:]


def test_metrics_add_up_across_workers_and_stay_off_the_public_port(
    gateway: tuple[str, str, Path]
) -> None:
    base, metrics, metrics_dir = gateway
    token = issue_token(TEST_SECRET, "scraper-test", ["reader"], 600)
    with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent, so both workers get some
        codes = list(pool.map(lambda _: fetch(base + "/api/v1/types", token)[0], range(40)))
    assert codes == [200] * 40
    assert fetch(base + "/metrics")[0] == 404

    status, text = fetch(metrics)
    assert status == 200
    pattern = re.compile(r"^integration_gateway_http_request_duration_seconds_count"
                         r'\{[^}]*url_rule="/api/v1/types"[^}]*\} (\S+)$', re.MULTILINE)
    assert sum(float(v) for v in pattern.findall(text)) == 40
    # Both workers served some of them, and their counts were added up.
    assert len(list(metrics_dir.glob("histogram_*.db"))) == 2
    # The access log shows the requests, never the token.
    log = (metrics_dir.parent / "gateway.log").read_text()
    assert "/api/v1/types" in log
    assert token not in log and token.split(".")[1] not in log
    assert "message_id" not in text


def test_one_correlation_id_across_gateway_and_worker_logs(
    gateway: tuple[str, str, Path], worker: Any
) -> None:
    """X-Correlation-ID comes back, travels in the envelope, and marks every log line of the
    message in the gateway and the worker; those lines are JSON."""
    import json

    base, _, metrics_dir = gateway
    token = issue_token(TEST_SECRET, "logger", ["admin"], 600)
    correlation = f"trace-{uuid.uuid4().hex[:10]}"
    request = urllib.request.Request(
        base + "/api/v1/messages", method="POST",
        data=json.dumps({"type": "alert", "source": "logs", "data": {"name": "x"}}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                 "X-Correlation-ID": correlation})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        assert response.headers["X-Correlation-ID"] == correlation
        message_id = json.loads(response.read())["id"]

    def lines(path: Path) -> list[dict[str, Any]]:
        return [json.loads(line) for line in path.read_text(errors="replace").splitlines()
                if correlation in line]

    worker_lines = wait_for(lambda: [line for line in lines(worker.log_path)
                                     if line.get("event") == "processed"],
                            message="the worker's line for the message")
    assert worker_lines[0]["message_id"] == message_id
    assert worker_lines[0]["status"] == "succeeded" and worker_lines[0]["type"] == "alert"
    assert worker_lines[0]["attempt"] == 1 and "task_id" in worker_lines[0]
    gateway_lines = lines(metrics_dir.parent / "gateway.log")
    request_line = next(line for line in gateway_lines if line.get("event") == "request")
    assert request_line["path"] == "/api/v1/messages" and request_line["status"] == 202
    assert request_line["subject"] == "logger" and "duration_ms" in request_line
    for line in gateway_lines + lines(worker.log_path):
        assert {"time", "level", "logger", "event", "correlation_id"} <= line.keys()
        assert token not in json.dumps(line)


def _established(process: psutil.Process, port: int) -> int:
    return sum(1 for c in process.net_connections(kind="tcp")
               if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port)


def test_keep_alive_connections_spread_across_worker_processes(
    gateway: tuple[str, str, Path]
) -> None:
    """A client pool's keep-alive connections reach every worker process. With one listening
    socket shared by the processes, the first to wake could accept them all (a connection
    stays with its process), leaving the other cores idle; each process listens itself."""
    base = gateway[0]
    port = int(base.rsplit(":", 1)[1])
    pool = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(32)]
    try:
        for connection in pool:  # opened together, as a pool starts
            connection.connect()
        for connection in pool:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
        workers = psutil.Process(SERVERS[base].pid).children()
        held = {worker.pid: _established(worker, port) for worker in workers}
        assert len(held) == 2 and sum(held.values()) == 32, held
        # Spread by the kernel's hash of each connection's addresses: fewer than 4 of 32 on
        # one of two processes has a chance of about 1 in 60,000.
        assert min(held.values()) >= 4, held
    finally:
        for connection in pool:
            connection.close()


def test_a_second_gateway_on_a_port_in_use_fails_instead_of_sharing_it(
    gateway: tuple[str, str, Path], tmp_path: Path
) -> None:
    """Each process's socket allows others on the same port, so a second gateway of the same
    user could otherwise listen beside the first and take part of its connections."""
    base = gateway[0]
    port = base.rsplit(":", 1)[1]
    env = {**os.environ, "INTEGRATION_JWT_SECRET": TEST_SECRET,
           "INTEGRATION_GATEWAY_WORKERS": "2",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "second-metrics")}
    second = subprocess.run([sys.executable, "-m", "integration", "serve", "--port", port],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in second.stderr
    assert "in use" in second.stderr
    assert fetch(base + "/healthz")[0] == 200


def _post(port: int, token: str, body: bytes) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request("POST", "/api/v1/messages", body=body, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return int(response.status)
    finally:
        connection.close()


def test_one_tenants_unwritable_messages_never_fail_anothers_concurrent_requests(
    gateway: tuple[str, str, Path]
) -> None:
    """Tenant A sends messages holding lone surrogates among tenant B's 240 concurrent valid
    requests, which share the gateway's coalesced flushes: A gets 422s, B only 202s."""
    port = int(gateway[0].rsplit(":", 1)[1])
    tenant_a = issue_token(TEST_SECRET, "tenant-a", ["admin"], 600)
    tenant_b = issue_token(TEST_SECRET, "tenant-b", ["admin"], 600)
    bad = [b'{"type": "event", "source": "a", "data": {"x": "\\ud800"}}',
           b'{"type": "event", "source": "a", "ext": "\\udfff", "data": {}}',
           b'{"type": "event", "source": "a", "data": {"\\ud83d": 1}}']
    jobs = []
    for n in range(240):
        jobs.append(("b", tenant_b,
                     b'{"type": "event", "source": "b", "data": {"n": %d}}' % n))
        if n % 4 == 0:
            jobs.append(("a", tenant_a, bad[n % len(bad)]))
    with ThreadPoolExecutor(max_workers=24) as pool:
        codes = list(pool.map(lambda job: (job[0], _post(port, job[1], job[2])), jobs))
    assert [code for tenant, code in codes if tenant == "b"] == [202] * 240
    assert [code for tenant, code in codes if tenant == "a"] == [422] * 60
