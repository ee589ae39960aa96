"""Correlation ids, the request's W3C trace context, and one structured log line per request
(never the token)."""

from __future__ import annotations

import re
import time

from flask import Flask, Response, g, request

from integration import logs
from integration.messages import tracecontext
from integration.messages.envelope import ID_PATTERN, new_id
from integration.messages.tracecontext import TRACEPARENT, TRACESTATE, TraceContext

CORRELATION_HEADER = "X-Correlation-ID"
_VALID = re.compile(ID_PATTERN)
log = logs.get_logger("integration.gateway")


def correlation_id() -> str:
    """This request's correlation id (from the header when valid, else a new one)."""
    return str(g.get("correlation_id") or "")


def correlation_given() -> bool:
    """Whether the client sent this request's correlation id (rather than the gateway)."""
    return bool(g.get("correlation_given"))


def trace_context() -> TraceContext | None:
    """The request's ``traceparent``/``tracestate`` headers; an invalid ``traceparent`` is
    ignored (a new trace starts), as W3C Trace Context says a receiver does."""
    return tracecontext.parse(request.headers.get(TRACEPARENT), request.headers.get(TRACESTATE))


def _start() -> None:
    # The request's own context, kept in ``g`` because it is set before any view runs and read
    # by the log line after it; the views read it through the two functions above.
    logs.clear()
    given = request.headers.get(CORRELATION_HEADER, "")
    g.correlation_given = bool(_VALID.match(given))
    g.correlation_id = given if g.correlation_given else new_id()
    g.request_started = time.perf_counter()
    logs.bind(correlation_id=g.correlation_id)


def _finish(response: Response) -> Response:
    response.headers[CORRELATION_HEADER] = correlation_id()
    principal = g.get("principal")
    log.info("request", method=request.method, path=request.path, status=response.status_code,
             duration_ms=round((time.perf_counter() - g.get("request_started", 0)) * 1000, 2),
             subject=principal.subject if principal else None)
    return response


def init_request_log(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)
