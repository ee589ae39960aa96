"""The processes a benchmark run starts and stops: Redis, gunicorn servers, Celery workers."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil
import redis

from bench import servers
from integration.ops.embedded_redis import EmbeddedRedis, free_port
from integration.ops.server import reuse_port
from integration.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
#: prctl(2) option: the signal a process gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def _detached_until_parent_dies() -> None:
    """In the child before exec: a session of its own (signals reach its whole group), and
    SIGTERM when the benchmark dies, so that no server outlives an interrupted run."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Process:
    """A child process with its log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log_path = log
        self._log = log.open("ab")
        self.popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self._log,
                                      stderr=subprocess.STDOUT,
                                      preexec_fn=_detached_until_parent_dies)  # noqa: PLW1509

    def pids(self) -> list[int]:
        """This process and its children (gunicorn's or Celery's workers)."""
        try:
            parent = psutil.Process(self.popen.pid)
            return [parent.pid, *(c.pid for c in parent.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def children(self) -> list[int]:
        return self.pids()[1:]

    def check(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{tail}")

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()


class CpuMeter:
    """CPU seconds (user + system) spent by groups of processes, and by the whole machine,
    between ``start`` and ``stop``: where the cores went while a figure was measured."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self._before: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        seconds = {name: sum(_cpu_seconds(pid) for pid in pids())
                   for name, pids in self.groups.items()}
        machine = psutil.cpu_times()
        seconds["machine"] = machine.user + machine.system
        return seconds

    def start(self) -> None:
        self._before = self._read()

    def stop(self) -> dict[str, float]:
        after = self._read()
        return {name: after[name] - self._before.get(name, after[name]) for name in after}


def _cpu_seconds(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


class Server(Process):
    """A gunicorn server on 127.0.0.1:``port``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path,
                 port: int) -> None:
        super().__init__(name, argv, env, log)
        self.port = port

    def wait_ready(self, path: str = "/healthz", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}",  # noqa: S310
                                            timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers (405 for a GET on a POST route): up
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not start (log {self.log_path})") \
                        from None
                time.sleep(0.2)


class Worker(Process):
    """A ``celery worker``; ready once its log says so."""

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.log_path.read_text(errors="replace"):
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start (log {self.log_path})")
            time.sleep(0.1)


class RssSampler:
    """Samples the resident memory of process groups in the background; keeps each group's
    peak (of any one process) and a time series for the soak."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.groups: dict[str, Callable[[], Iterable[int]]] = {}
        self.peak_mb: dict[str, float] = {}
        self.series: dict[str, list[tuple[float, float]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss")

    def watch(self, group: str, pids: Callable[[], Iterable[int]]) -> None:
        self.groups[group] = pids

    def sample(self) -> dict[str, float]:
        """Each group's largest process right now (MB)."""
        now: dict[str, float] = {}
        for group, pids in list(self.groups.items()):
            sizes = []
            for pid in pids():
                try:
                    sizes.append(psutil.Process(pid).memory_info().rss / 2**20)
                except psutil.NoSuchProcess:
                    continue
            if sizes:
                now[group] = max(sizes)
                self.peak_mb[group] = max(self.peak_mb.get(group, 0.0), now[group])
                self.series.setdefault(group, []).append((time.time(), now[group]))
        return now

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Stack:
    """Starts what a run measures, all sharing one Redis, and stops it all at the end."""

    def __init__(self, workdir: Path, settings: Settings, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.settings = settings
        self.redis: EmbeddedRedis | None = None
        self.replica: EmbeddedRedis | None = None
        self.redis_url = settings.bench_redis_url or ""
        self.env = env
        self.started: list[Process] = []
        #: Processes sampled by component, by name: the folder of their samples.
        self.sampled: dict[str, Path] = {}
        self._ports: set[int] = set()

    def _port(self) -> int:
        """A free port not handed to another process of this run: servers started together
        bind only later, and two given the same port would have one answer for both."""
        while (port := free_port()) in self._ports:
            pass
        self._ports.add(port)
        return port

    def start_redis(self) -> str:
        if not self.redis_url:
            # Like production's broker (AOF, every second); no RDB snapshots mid-run.
            self.redis = EmbeddedRedis(self.workdir / "redis", persistent=True).start()
            self.redis_url = self.redis.url
        return self.redis_url

    def start_replica(self, timeout: float = 30) -> EmbeddedRedis | None:
        """A replica of the run's own Redis, in sync (None when the run measures a Redis
        given by URL: its replicas are not the run's to start)."""
        if self.redis is None:
            return None
        master = redis.Redis(port=self.redis.port)
        master.config_set("repl-diskless-sync-delay", 0)  # sync now, not in five seconds
        self.replica = EmbeddedRedis(self.workdir / "replica", persistent=False, extra_args=(
            "--replicaof", "127.0.0.1", str(self.redis.port))).start()
        master.set("bench:replica", 1)
        deadline = time.monotonic() + timeout
        while master.execute_command("WAIT", 1, 1000) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not come in sync")
        master.close()
        return self.replica

    def child_env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, **self.env, "INTEGRATION_REDIS_URL": self.redis_url, **extra}

    def gateway(self, name: str, server: str = "gevent", **extra_env: str) -> Server:
        """Our gateway: ``integration serve`` as deployed (gunicorn with gevent workers), or
        under another ``server`` (bench/servers.py)."""
        port = self._port()
        metrics = self.workdir / f"metrics-{name}"
        metrics.mkdir(exist_ok=True)
        env = self.child_env(PROMETHEUS_MULTIPROC_DIR=str(metrics), **extra_env)
        if server == "granian":
            argv = servers.granian_argv(self.settings, "bench.servers:gateway_app", port)
        else:
            env["INTEGRATION_GATEWAY_WORKER_CLASS"] = server
            argv = [sys.executable, "-m", "integration", "serve", "--port", str(port)]
        process = Server(name, self._sampled(name, argv), env, self.workdir / f"{name}.log",
                         port)
        self.started.append(process)
        return process

    def baseline_server(self, name: str, server: str | None = None) -> Server:
        """A baseline app under the gateway's server (or ``server``), with its worker class,
        counts and listening sockets (one per process where the gateway has one per
        process)."""
        port = self._port()
        server = server or self.settings.gateway_worker_class
        if server == "granian":
            argv = servers.granian_argv(self.settings, f"bench.baselines:{name}_app", port)
        else:
            options = servers.gunicorn_options(self.settings, server)
            if reuse_port(self.settings):
                options.append("--reuse-port")
            argv = [sys.executable, "-m", "gunicorn", *options, "-b", f"127.0.0.1:{port}",
                    "--error-logfile", "-", "--no-control-socket",
                    f"bench.baselines:{name}_app()"]
        label = name if server == self.settings.gateway_worker_class else f"{name}-{server}"
        process = Server(label, argv, self.child_env(), self.workdir / f"{label}.log", port)
        self.started.append(process)
        return process

    def worker(self, name: str, app: str, queues: list[str], concurrency: int, *,
               task_events: bool = False, **extra_env: str) -> Worker:
        argv = [sys.executable, "-m", "celery", "-A", app, "worker", "--loglevel", "INFO",
                "--pool", "prefork", "--concurrency", str(concurrency), "--hostname",
                f"{name}-{os.getpid()}@%h", "--queues", ",".join(queues), "--without-gossip",
                "--without-mingle"]
        if task_events:
            argv.append("--task-events")  # as the dev stack and compose run the service
        env = self.child_env(INTEGRATION_METRICS_PORT=str(self._port()), **extra_env)
        log = self.workdir / f"{name}.log"
        log.write_bytes(b"")
        worker = Worker(name, self._sampled(name, argv), env, log)
        self.started.append(worker)
        return worker

    def samples(self, name: str) -> Path:
        """The process ``name``, when started, is sampled by component (bench/profiler.py)
        into the folder returned."""
        folder = self.sampled[name] = self.workdir / f"samples-{name}"
        folder.mkdir(exist_ok=True)
        return folder

    def _sampled(self, name: str, argv: list[str]) -> list[str]:
        """``python -m MODULE ...`` run under the sampler when ``name`` is to be sampled."""
        folder = self.sampled.get(name)
        if folder is None:
            return argv
        return [argv[0], "-m", "bench.profiler", str(folder), *argv[2:]]

    def stop(self, process: Process) -> None:
        process.stop()
        if process in self.started:
            self.started.remove(process)

    def close(self) -> None:
        for process in reversed(self.started):
            process.stop()
        self.started.clear()
        if self.replica is not None:
            self.replica.stop()
        if self.redis is not None:
            self.redis.stop()
