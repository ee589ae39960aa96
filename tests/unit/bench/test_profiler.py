"""The CPU sampler of the benchmark's breakdown: a stack counts for the innermost frame that
belongs to a component, samples follow the process's CPU time (in forked children too), and
the table's components and rest add up to the measured total."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any, cast

from bench import breakdown
from bench.profiler import HUB, OTHER, classify, component_of
from tests.conftest import ROOT


def test_the_longest_module_prefix_names_the_component() -> None:
    assert component_of("integration.messages.tracecontext") == "tracing"
    assert component_of("integration.messages.envelope") == "validation"
    assert component_of("integration.gateway.submit") == "ours"
    assert component_of("flask_jwt_extended.view_decorators") == "auth (JWT)"
    assert component_of("flask.app") == "Flask"
    assert component_of("logging.handlers") == "logging"
    assert component_of("json.decoder") is None
    assert component_of("gevent.hub") is None


def _stack(*modules: str) -> FrameType:
    """A real stack whose frames run in ``modules``, outermost first; its innermost frame."""
    inner: Any = None
    for module in reversed(modules):
        namespace = {"__name__": module, "inner": inner}
        inner = eval("lambda: inner() if inner else __import__('sys')._getframe()",  # noqa: S307
                     namespace)
    return cast(FrameType, inner())


def test_a_stack_counts_for_its_innermost_component() -> None:
    # The standard library's socket read counts for the Redis client that called it.
    assert classify(_stack("gunicorn.workers", "flask.app", "redis.client", "socket")) == \
        ("Redis client and store", "redis.client")
    assert classify(_stack("gevent.hub", "selectors")) == (HUB, "selectors")
    assert classify(_stack("threading", "selectors")) == (OTHER, "selectors")


SAMPLED = """
import os, sys, time
from pathlib import Path
from bench.profiler import Sampler
sampler = Sampler(Path(sys.argv[1]))
sampler.install()
child = os.fork()
end = time.process_time() + 0.4
while time.process_time() < end:
    pass
sampler.write()
if child:
    os.waitpid(child, 0)
"""


def test_samples_follow_cpu_time_in_the_process_and_its_forks(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", SAMPLED, str(tmp_path)], cwd=ROOT, check=True,
                   timeout=30)
    written = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert len(written) == 2, "the parent's samples and the forked child's"
    for counts in written:
        # 0.4 s of CPU at one sample per 4 ms: about 100, fewer on a busy machine's ticks.
        assert 30 <= counts[f"{OTHER} | __main__"] <= 130, counts


def test_the_table_adds_the_components_and_the_rest_up_to_the_total() -> None:
    item = breakdown.Breakdown("x", 10, 5.0, {"gateway": breakdown.Group(
        total_us=100.0, parts={"Flask": 60.0, "logging": 30.0, "other": 10.0}, samples=50,
        sampled=1.0, modules={})}, redis_us=20.0).to_json()
    lines = breakdown.table([item])
    text = "\n".join(lines)
    assert "= sum of the components" in text and "90" in text
    assert any(line.split()[-1] == "100" and "measured" in line for line in lines)
    assert any("unattributed" in line and line.split()[-1] == "10" for line in lines)
