"""Runs the processes of ``integration up``: their output prefixed with their name, a process
that exits started again (with a growing delay while it keeps failing), and SIGINT, SIGTERM or
SIGHUP stopping them all, each as a whole process group, in the reverse order of their start.

A Celery worker can exit on a lost broker connection (celery #9250); here, as under compose's
restart policy or systemd's ``Restart=always``, it comes back. honcho, which ran the stack
before, stops every process when one exits.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

#: Signals that stop the stack (SIGHUP: the terminal was closed).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class Program:
    """One process to keep running."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0  # exits in a row that came soon after a start
    #: Answers True once the program serves; the programs after it start only then.
    ready: Callable[[], bool] | None = None
    #: Seconds ``ready`` may take before the stack gives up.
    ready_timeout: float = 30.0


class Supervisor:
    """Start every program, restart one that exits, stop all on a signal; ``run`` returns the
    exit status for the command (0 after a requested stop)."""

    def __init__(self, programs: Sequence[Program], out: IO[str] | None = None, *,
                 first_delay: float = 1.0, max_delay: float = 30.0, settled_after: float = 30.0,
                 grace: float = 15.0) -> None:
        self.programs = {p.name: p for p in programs}
        self.out = out or sys.stdout
        self.first_delay, self.max_delay = first_delay, max_delay
        self.settled_after, self.grace = settled_after, grace
        self._events: queue.Queue[tuple[str, str, int]] = queue.Queue()
        self._stopping = threading.Event()
        self._write = threading.Lock()
        self._width = max(len(name) for name in self.programs)
        self._restart_at: dict[str, float] = {}
        self.restarts = 0

    def say(self, name: str, line: str) -> None:
        self.write(f"{time.strftime('%H:%M:%S')} {name:<{self._width}} | {line}\n")

    def write(self, text: str) -> None:
        """Write to the output; a closed terminal (EIO) or pipe must not stop the stopping."""
        with self._write, contextlib.suppress(OSError, ValueError):
            self.out.write(text)
            self.out.flush()

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        try:
            for program in self.programs.values():
                self._start(program)
                if program.ready is not None and not self._wait_ready(program):
                    return 1
            return self._loop()
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _wait_ready(self, program: Program) -> bool:
        assert program.ready is not None and program.process is not None
        deadline = time.monotonic() + program.ready_timeout
        while not program.ready():
            if program.process.poll() is not None or time.monotonic() > deadline:
                what = (f"exited with code {program.process.poll()}"
                        if program.process.poll() is not None
                        else f"did not answer within {program.ready_timeout:g} s")
                self.say("supervisor", f"{program.name} {what}; stopping the stack "
                                       "(its output is above)")
                return False
            if self._stopping.is_set():
                return False
            time.sleep(0.05)
        return True

    def stop(self, reason: str = "asked") -> None:
        """Stop every program and return from ``run`` (safe from any thread)."""
        self._stopping.set()
        self._events.put(("stop", reason, 0))

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop(signal.Signals(signum).name)

    def _loop(self) -> int:
        while True:
            timeout = 0.5
            if self._restart_at:
                timeout = max(0.0, min(min(self._restart_at.values()) - time.monotonic(), 0.5))
            try:
                kind, name, code = self._events.get(timeout=timeout)
            except queue.Empty:
                self._restart_due()
                continue
            if kind == "stop":
                self.say("supervisor", f"{name}: stopping every process")
                return 0
            self._exited(self.programs[name], code)

    def _exited(self, program: Program, code: int) -> None:
        ran = time.monotonic() - program.started
        program.failures = 0 if ran >= self.settled_after else program.failures + 1
        delay = min(self.first_delay * 2 ** max(program.failures - 1, 0), self.max_delay)
        self.say("supervisor", f"{program.name} exited with code {code} after {ran:.0f} s; "
                               f"starting it again in {delay:g} s")
        self._restart_at[program.name] = time.monotonic() + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for name, at in list(self._restart_at.items()):
            if at <= now:
                del self._restart_at[name]
                self.restarts += 1
                self._start(self.programs[name])

    def _start(self, program: Program) -> None:
        process = subprocess.Popen(
            list(program.argv), env=dict(program.env) or None, cwd=program.cwd,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # A group of its own: the terminal's Ctrl-C reaches the supervisor only, which
            # then stops each program (and its children) in order.
            start_new_session=True)
        program.process, program.started = process, time.monotonic()
        threading.Thread(target=self._pump, args=(program, process), daemon=True,
                         name=f"output-{program.name}").start()

    def _pump(self, program: Program, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            self.say(program.name, raw.decode(errors="replace").rstrip("\n"))
        self._events.put(("exit", program.name, process.wait()))

    def _stop_all(self) -> None:
        """SIGTERM to each program's group, those others wait for (``ready``) after the rest,
        so the store outlives what writes to it; what remains after the grace is killed."""
        deadline = time.monotonic() + self.grace
        later = [p for p in self.programs.values() if p.ready is not None]
        first = [p for p in self.programs.values() if p.ready is None]
        for group in (first, list(reversed(later))):
            running = [p.process for p in group
                       if p.process is not None and p.process.poll() is None]
            for process in running:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
            for process in running:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(max(0.0, deadline - time.monotonic()))
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # what remains of the group
                process.wait()


@contextlib.contextmanager
def own_terminal() -> Iterator[None]:
    """Make this process's group the terminal's foreground group while the stack runs.

    Ctrl-C then reaches the supervisor alone, which stops the stack and exits 0, instead of
    also interrupting ``make`` above it (which would report an error). Closing the terminal
    still sends SIGHUP to the foreground group. Nothing changes without a controlling
    terminal or when started in the background.
    """
    try:
        tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        yield
        return
    try:
        before = os.tcgetpgrp(tty)
        if before != os.getpgrp() or os.getpid() == os.getsid(0):
            yield  # a background job, or already the session's leader
            return
        quiet = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.setpgid(0, 0)
            os.tcsetpgrp(tty, os.getpgrp())
        finally:
            signal.signal(signal.SIGTTOU, quiet)
        try:
            yield
        finally:
            quiet = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            with contextlib.suppress(OSError):
                os.tcsetpgrp(tty, before)
            signal.signal(signal.SIGTTOU, quiet)
    finally:
        os.close(tty)
