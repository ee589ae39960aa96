"""Where a process's CPU goes, by component: ``python -m bench.profiler DIR MODULE [ARGS]``
runs ``python -m MODULE ARGS`` with a sampler in it and in every process it forks
(gunicorn's and Celery's workers), each writing its counts to ``DIR/<pid>.json``.

The sampler is driven by the kernel's profiling timer (``ITIMER_PROF``), which fires after
every ``INTERVAL`` of the process's own CPU time (user and system), so samples fall in
proportion to CPU, never to waiting. Each sample is the stack that was running: Python runs
the handler at the next bytecode, which is right after a C call or a system call returns,
so time spent in C (orjson, pydantic-core, a socket write) counts for the Python frame that
called it. A stack is given to the component of its innermost frame that belongs to one
(``COMPONENTS``); the standard library, gevent and greenlet belong to none, so a socket
read counts for the client that made it.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import signal
import sys
from collections import Counter
from pathlib import Path
from types import FrameType

#: Process CPU time between samples: a kernel tick (4 ms at 250 Hz) or more, so that no
#: expiry is lost between ticks.
INTERVAL = 0.004
#: Samples between two writes of the counts.
WRITE_EVERY = 25
#: Module (or package) -> component. The longest matching prefix of a module's name wins.
COMPONENTS: dict[str, str] = {
    **dict.fromkeys(("gunicorn", "granian"), "HTTP server"),
    **dict.fromkeys(("flask", "werkzeug", "blinker", "itsdangerous", "spectree", "jinja2",
                     "markupsafe"), "Flask"),
    **dict.fromkeys(("flask_jwt_extended", "jwt", "integration.security",
                     "integration.gateway.auth"), "auth (JWT)"),
    **dict.fromkeys(("flask_limiter", "limits", "integration.gateway.limits",
                     "integration.gateway.ratelimitstore"), "rate limit"),
    **dict.fromkeys(("pydantic", "pydantic_core", "integration.messages"), "validation"),
    **dict.fromkeys(("redis", "hiredis", "integration.store", "integration.broker"),
                    "Redis client and store"),
    **dict.fromkeys(("logging", "structlog", "integration.logs",
                     "integration.gateway.requestlog"), "logging"),
    **dict.fromkeys(("prometheus_client", "prometheus_flask_exporter",
                     "integration.gateway.metrics", "integration.worker.metrics",
                     "tasks.observability"), "metrics"),
    **dict.fromkeys(("opentelemetry", "integration.tracing",
                     "integration.messages.tracecontext"), "tracing"),
    **dict.fromkeys(("celery", "kombu", "billiard", "amqp", "vine"), "Celery"),
    **dict.fromkeys(("integration", "tasks"), "ours"),
    "bench": "sampler",
}
#: A stack with no component: gevent's hub (the server's event loop) when one of its frames
#: is on the stack, otherwise nobody's.
HUB, OTHER = "HTTP server", "other"
_cache: dict[str, str | None] = {}


def component_of(module: str) -> str | None:
    """The component a module belongs to (None: the standard library and the like)."""
    if module not in _cache:
        name, found = module, None
        while name:
            found = COMPONENTS.get(name)
            if found is not None:
                break
            name = name.rpartition(".")[0]
        _cache[module] = found
    return _cache[module]


def classify(frame: FrameType | None) -> tuple[str, str]:
    """The component of the innermost frame that has one, and that frame's module."""
    in_gevent, innermost = False, ""
    while frame is not None:
        module = frame.f_globals.get("__name__") or ""
        found = component_of(module)
        if found is not None:
            return found, module
        innermost = innermost or module
        in_gevent = in_gevent or module.startswith("gevent")
        frame = frame.f_back
    return (HUB if in_gevent else OTHER), innermost


#: Between a component and the module that decided it, in the keys of the counts.
SEPARATOR = " | "


class Sampler:
    """Counts samples by component and module and writes them to ``directory/<pid>.json``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.counts: Counter[str] = Counter()

    def install(self) -> None:
        signal.signal(signal.SIGPROF, self._sample)
        self._arm()
        # A forked process inherits the handler, not the timer, and starts its own count.
        os.register_at_fork(after_in_child=self._restart)
        # Stopped before the interpreter's exit restores SIGPROF's default (termination).
        atexit.register(signal.setitimer, signal.ITIMER_PROF, 0)

    def _arm(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, INTERVAL, INTERVAL)

    def _restart(self) -> None:
        self.counts = Counter()
        self._arm()

    def _sample(self, signum: int, frame: FrameType | None) -> None:
        self.counts[SEPARATOR.join(classify(frame))] += 1
        if self.counts.total() % WRITE_EVERY == 0:
            self.write()

    def write(self) -> None:
        path = self.directory / f"{os.getpid()}.json"
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(self.counts))
        os.replace(partial, path)


def read_counts(directory: Path, pids: list[int]) -> Counter[str]:
    """The samples the processes ``pids`` wrote so far, summed (keys: component, module)."""
    total: Counter[str] = Counter()
    for pid in pids:
        try:
            total.update(json.loads((directory / f"{pid}.json").read_text()))
        except (OSError, ValueError):
            continue  # none yet, or caught between writes (os.replace: never half a file)
    return total


def main() -> None:
    directory, module, *args = sys.argv[1:]
    Sampler(Path(directory)).install()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
