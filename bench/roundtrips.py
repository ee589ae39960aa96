"""``python -m bench.roundtrips``: count a worker's Redis round trips per processed message.

Starts a private ``redis-server``, pre-fills ``--messages`` ``event`` messages (optionally with
the bench consumer subscribed), runs ``celery -A tasks worker -c 2`` until they are all
finished, and prints how many times the worker's processes wrote a request to Redis, per
message, grouped by process (main or pool child), caller and commands. A write is one round
trip: redis-py sends a pipeline or a transaction in one write, and kombu's own traffic (BRPOP,
acks, the unacked index) goes through the same connections.

The count is taken by a ``sitecustomize`` that wraps redis-py's ``send_packed_command`` in the
worker's processes only; nothing of it is part of the service. The CPU time each process
spent while draining (user plus system, ``bench.stack.CpuMeter``) is printed per message too; with
``--no-count`` it is the worker's own, without the counting hook. So is Redis's side, for the
pre-fill (the gateway's enqueue script, in chunks as a batch) and the drain apart: the time its
commands took (``INFO commandstats``) and the CPU of the whole server (``INFO cpu``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import redis

from bench.stack import CpuMeter, Stack
from integration.ops.client import Client
from integration.ops.embedded_redis import EmbeddedRedis
from integration.settings import Settings

_SITECUSTOMIZE = r'''
import os, re, sys, threading
_dir = os.environ.get("BENCH_ROUNDTRIPS_DIR")
if _dir:
    import redis.connection as _rc
    _names = re.compile(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n")
    _lock = threading.Lock()
    _files = {}
    _original = _rc.AbstractConnection.send_packed_command

    def _caller():
        frame = sys._getframe(2)
        fallback = None
        while frame is not None:
            path = frame.f_code.co_filename
            if "/integration/" in path or "/tasks/" in path:
                return path.rsplit("/", 1)[-1][:-3] + "." + frame.f_code.co_name
            if fallback is None and ("/kombu/" in path or "/celery/" in path):
                fallback = "kombu/celery:" + path.rsplit("/", 1)[-1][:-3] + "." \
                    + frame.f_code.co_name
            frame = frame.f_back
        return fallback or "other"

    def send_packed_command(self, command, check_health=True):
        chunks = [command] if isinstance(command, (bytes, str)) else command
        data = b"".join(c if isinstance(c, bytes) else bytes(c) for c in chunks
                        if isinstance(c, (bytes, bytearray, memoryview)))
        names = ",".join(n.decode().upper() for n in _names.findall(data))
        pid = os.getpid()
        with _lock:
            handle = _files.get(pid)
            if handle is None:
                handle = _files[pid] = open(os.path.join(_dir, f"{pid}.log"), "a")
            handle.write(f"{_caller()}\t{names}\n")
            handle.flush()
        return _original(self, command, check_health)

    _rc.AbstractConnection.send_packed_command = send_packed_command
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--consumer", action="store_true",
                        help="subscribe the bench consumer to event.succeeded")
    parser.add_argument("--json", help="also write the counts to this file")
    parser.add_argument("--no-count", action="store_true",
                        help="only time the drain (no counting hook in the worker)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="roundtrips-") as tmp:
        workdir = Path(tmp)
        hook = workdir / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        counts = workdir / "counts"
        counts.mkdir()
        server = EmbeddedRedis(workdir / "redis", persistent=True).start()
        try:
            report = _measure(server.url, workdir, None if args.no_count else hook, counts,
                              args.messages, args.consumer)
        finally:
            server.stop()
    _print(report, args.messages)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _measure(url: str, workdir: Path, hook: Path | None, counts: Path, messages: int,
             consumer: bool) -> dict[str, object]:
    env = {"INTEGRATION_REDIS_URL": url, "INTEGRATION_LOOP_STAGES": "",
           "INTEGRATION_CONSUMER_MODULES": "bench.consumers:CONSUMERS" if consumer else "",
           "INTEGRATION_LOG_LEVEL": "INFO"}
    os.environ.update(env)
    settings = Settings()
    client = Client(settings)
    r = redis.Redis.from_url(url)
    mark = _redis_mark(r)
    results = client.submit_many([{"type": "event", "source": "bench/roundtrips",
                                   "data": {"n": n, "kind": "bench"}}
                                  for n in range(messages)])
    assert all(hasattr(r, "id") for r in results), results
    redis_side = {"enqueue": _redis_since(r, mark, messages)}
    stack = Stack(workdir, settings, env)
    stack.redis_url = url
    queues = ["event"] + (["consumer.bench-sink"] if consumer else [])
    hooked = {} if hook is None else {
        "BENCH_ROUNDTRIPS_DIR": str(counts),
        "PYTHONPATH": f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    worker = stack.worker("worker", "tasks", queues, 2, task_events=False, **hooked)
    index = f"{settings.key_prefix}:idx:status:succeeded"
    total = messages * (2 if consumer else 1)
    try:
        try:
            worker.wait_ready()
        except RuntimeError:
            print(worker.log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        meter = CpuMeter({"main" if pid == worker.popen.pid else f"child {pid}":
                          _just(pid) for pid in worker.pids()})
        mark = _redis_mark(r)
        meter.start()
        started = time.monotonic()
        while cast(int, r.zcard(index)) < total:
            worker.check()
            if time.monotonic() - started > 300:
                raise RuntimeError("the worker did not finish every message")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        cpu = meter.stop()
        cpu.pop("machine")
        redis_side["drain"] = _redis_since(r, mark, messages)
    finally:
        main_pid = worker.popen.pid
        stack.stop(worker)
    by_process: dict[str, int] = collections.Counter()
    by_caller: dict[str, int] = collections.Counter()
    for path in counts.glob("*.log"):
        role = "main" if int(path.stem) == main_pid else "child"
        for line in path.read_text().splitlines():
            caller, _, names = line.partition("\t")
            by_process[role] += 1
            by_caller[f"{role:5} {caller:45} {_short(names)}"] += 1
    return {"messages": messages, "consumer": consumer, "seconds": round(elapsed, 3),
            "cpu_us_per_message": {role: round(seconds / messages * 1e6)
                                   for role, seconds in cpu.items()},
            "by_process": dict(by_process), "by_caller": dict(by_caller), "redis": redis_side}


def _redis_mark(r: redis.Redis) -> tuple[float, float]:
    """Zero Redis's command statistics; return its CPU seconds so far (main thread, all)."""
    r.config_resetstat()
    return _redis_cpu(r)


def _redis_cpu(r: redis.Redis) -> tuple[float, float]:
    cpu = cast(dict[str, float], r.info("cpu"))
    return (cpu["used_cpu_user_main_thread"] + cpu["used_cpu_sys_main_thread"],
            cpu["used_cpu_user"] + cpu["used_cpu_sys"])


def _redis_since(r: redis.Redis, mark: tuple[float, float], messages: int) -> dict[str, object]:
    """Redis's time per message since ``mark``: each command's calls and microseconds (a
    command run by a script or a transaction counts in its own line and in ``EVALSHA`` or
    ``EXEC``'s), and the server's CPU, which adds reading, parsing, answering and the AOF."""
    main, total = _redis_cpu(r)
    stats = cast(dict[str, dict[str, float]], r.info("commandstats"))
    commands = {name.removeprefix("cmdstat_").upper():
                {"calls": round(s["calls"] / messages, 2), "usec": round(s["usec"] / messages, 1)}
                for name, s in stats.items() if not name.startswith("cmdstat_config")}
    return {"commands": commands,
            "main_thread_cpu_us_per_message": round((main - mark[0]) / messages * 1e6),
            "cpu_us_per_message": round((total - mark[1]) / messages * 1e6)}


def _just(pid: int) -> Callable[[], list[int]]:
    return lambda: [pid]


def _short(names: str) -> str:
    parts = names.split(",")
    return names if len(parts) <= 6 else ",".join(parts[:3] + ["…"] + parts[-2:])


def _print(report: dict[str, object], messages: int) -> None:
    by_process = cast(dict[str, int], report["by_process"])
    by_caller = cast(dict[str, int], report["by_caller"])
    print(f"{messages} messages{' (+ one consumer delivery each)' if report['consumer'] else ''}"
          f" drained in {report['seconds']} s ({messages / cast(float, report['seconds']):.0f}/s)")
    cpu = cast(dict[str, int], report["cpu_us_per_message"])
    print("CPU per message (user + system): "
          + ", ".join(f"{role} {micros} µs" for role, micros in cpu.items()))
    for phase, side in cast(dict[str, dict[str, Any]], report["redis"]).items():
        print(f"Redis per message, {phase}: server CPU {side['cpu_us_per_message']} µs "
              f"(main thread {side['main_thread_cpu_us_per_message']} µs); commands: "
              + ", ".join(f"{name} {c['calls']}× {c['usec']} µs"
                          for name, c in sorted(side["commands"].items(),
                                                key=lambda kv: -kv[1]["usec"])[:5]))
    for role, n in sorted(by_process.items()):
        print(f"  {role}: {n} round trips, {n / messages:.2f} per message")
    print("per message, by process, caller and commands:")
    for key, n in sorted(by_caller.items(), key=lambda kv: -kv[1]):
        if n / messages >= 0.05:
            print(f"  {n / messages:6.2f}  {key}")
    if by_process and "child" not in by_process:
        print("  (no pool child wrote to Redis?)", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
