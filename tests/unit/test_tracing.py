"""Tracing off: no OpenTelemetry loaded, no spans, yet a message's context is carried on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import structlog

from integration import tracing
from integration.messages.tracecontext import TraceContext

ROOT = Path(__file__).resolve().parents[2]
PARENT = TraceContext("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "a=b")


def test_off_a_span_is_the_shared_no_op() -> None:
    """Without an endpoint nothing is configured, and a span without a parent costs nothing."""
    assert not tracing.enabled()
    assert tracing.span("x") is tracing.span("y")
    with tracing.span("x") as span:
        assert span is None
        assert tracing.current() is None and tracing.headers() == {}


def test_off_the_parent_is_carried_and_logged() -> None:
    """Within a step that has a context, what it sends continues that context, and its log
    lines carry the trace id."""
    with tracing.span("process", "consumer", PARENT):
        assert tracing.current() == PARENT
        assert tracing.headers() == {"traceparent": PARENT.traceparent, "tracestate": "a=b"}
        assert structlog.contextvars.get_contextvars()["trace_id"] == PARENT.trace_id
    assert tracing.current() is None
    assert "trace_id" not in structlog.contextvars.get_contextvars()


def test_off_nothing_of_opentelemetry_is_imported() -> None:
    """A worker and the gateway's app load neither the tracing SDK nor an exporter when
    tracing is off (redis-py's own instrumentation may load the API and the metrics SDK)."""
    code = ("import sys, tasks, integration.gateway, integration.ops.server; "
            "from integration import tracing; "
            "from integration.settings import Settings; "
            "assert not tracing.configure(Settings(), 'x'); "
            "loaded = [m for m in sys.modules if m.startswith(("
            "'opentelemetry.sdk.trace', 'opentelemetry.exporter'))]; "
            "assert not loaded, loaded")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
