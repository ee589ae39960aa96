"""What a benchmark run measured: the code (commit, whether the tree was dirty), the machine
(CPU model, cores, kernel, load) and the versions of what ran, recorded in every result file
so that figures can be judged and compared."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, cast

import redis

ROOT = Path(__file__).resolve().parent.parent
#: Packages whose versions change what is measured.
PACKAGES = ("celery", "kombu", "redis", "hiredis", "flask", "werkzeug", "gunicorn", "gevent",
            "granian", "pydantic", "flask-jwt-extended", "flask-limiter", "limits", "structlog",
            "prometheus-client", "orjson", "opentelemetry-sdk", "psutil")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def describe(redis_url: str | None = None) -> dict[str, Any]:
    """The code, the machine and the versions of this run (``redis_url``: the server measured)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    versions = _versions()
    if redis_url:
        client = redis.Redis.from_url(redis_url, socket_timeout=2)
        try:
            info = cast(dict[str, Any], client.info("server"))
            versions["redis-server"] = str(info.get("redis_version"))
        except redis.RedisError:
            versions["redis-server"] = None
        finally:
            client.close()
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "kernel": platform.release(),
                    "system": platform.system(), "load_average": list(os.getloadavg())},
        "versions": versions,
    }
