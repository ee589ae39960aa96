"""The supervisor of ``integration up``: a program that exits is started again, with a
growing delay while it keeps failing, and a stop ends every program."""

from __future__ import annotations

import io
import sys
import threading
import time
from pathlib import Path

from integration.ops.supervisor import Program, Supervisor


def test_a_program_that_exits_is_started_again_with_a_growing_delay() -> None:
    """Three quick exits: restarted after 0.1, 0.2 and 0.4 s, each announced."""
    out = io.StringIO()
    failing = Program("flaky", [sys.executable, "-c", "print('up'); raise SystemExit(3)"])
    supervisor = Supervisor([failing], out, first_delay=0.1, max_delay=1.0)
    threading.Timer(1.2, supervisor.stop).start()
    assert supervisor.run() == 0
    text = out.getvalue()
    assert supervisor.restarts >= 3
    assert "flaky exited with code 3" in text
    assert "starting it again in 0.1 s" in text and "starting it again in 0.4 s" in text
    assert text.count("flaky | up") == supervisor.restarts + 1


def test_a_stop_ends_every_program_and_its_children() -> None:
    """A program with a child of its own: both are gone once ``run`` returns."""
    out = io.StringIO()
    script = ("import subprocess, sys, time; "
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              "print(child.pid, flush=True); time.sleep(60)")
    supervisor = Supervisor([Program("parent", [sys.executable, "-c", script])], out,
                            grace=2)
    threading.Timer(1.0, supervisor.stop).start()
    started = time.monotonic()
    assert supervisor.run() == 0
    assert time.monotonic() - started < 5
    parent = supervisor.programs["parent"].process
    assert parent is not None and parent.poll() is not None
    child = int(out.getvalue().split("parent | ")[1].split()[0])
    time.sleep(0.2)
    try:
        state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        state = "gone"
    assert state in ("gone", "Z")
