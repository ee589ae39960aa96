"""OpenTelemetry tracing, off unless ``INTEGRATION_OTLP_ENDPOINT`` is set.

Off, nothing of OpenTelemetry is imported: a span is a shared no-op context (or, when a
message carries a ``traceparent``, only that context kept for what the step sends on), so a
trace a client started still travels with the message through untraced processes. On, each
process (a gunicorn worker, a Celery worker process) makes its own tracer provider after the
fork, since the batch span processor's thread does not survive one.

The provider is process-wide by OpenTelemetry's design (its global, ``set_tracer_provider``):
``configure`` sets it once per process, and this module keeps the tracer it made.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, Literal

import structlog

from integration import logs
from integration.messages import tracecontext
from integration.messages.tracecontext import TraceContext
from integration.settings import Settings

Kind = Literal["server", "client", "producer", "consumer", "internal"]

_OFF: AbstractContextManager[None] = nullcontext()
#: The context a step continues while tracing is off (the message's or the request's own).
_carried: ContextVar[TraceContext | None] = ContextVar("integration_trace", default=None)


class _Tracer:
    """This process's tracer and provider, once ``configure`` made them."""

    tracer: Any = None
    provider: Any = None


_process = _Tracer()


def enabled() -> bool:
    return _process.tracer is not None


def configure(settings: Settings, service: str) -> bool:
    """Make this process's tracer, exporting to the settings' OTLP/HTTP endpoint; nothing
    (and nothing imported) when it is unset. ``service`` names the process when
    ``OTEL_SERVICE_NAME`` does not."""
    if not settings.otlp_endpoint or _process.tracer is not None:
        return _process.tracer is not None
    # Imported here so that a deployment without tracing never loads the SDK.
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create(
        {"service.name": settings.otel_service_name or service}))
    endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _process.provider = provider
    _process.tracer = provider.get_tracer("integration")
    return True


def shutdown() -> None:
    """Export what is pending and stop (a process about to exit)."""
    provider, _process.provider, _process.tracer = _process.provider, None, None
    if provider is not None:
        provider.shutdown()


def span(name: str, kind: Kind = "internal", parent: TraceContext | None = None,
         attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """A span around a step, child of ``parent`` (a message's or a request's context) or of
    the current span; yields the span, or None while tracing is off."""
    if _process.tracer is None:
        return _OFF if parent is None else _carrying(parent)
    return _traced(name, kind, parent, attributes)


def current() -> TraceContext | None:
    """The context what this step sends on continues: the current span's, or while tracing
    is off the one the step carries."""
    if _process.tracer is None:
        return _carried.get()
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return tracecontext.of(carrier)


def headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) for an outbound call, or nothing."""
    context = current()
    return context.attributes() if context is not None else {}


@contextmanager
def _carrying(parent: TraceContext) -> Iterator[None]:
    token = _carried.set(parent)
    bound = logs.bind(trace_id=parent.trace_id)
    try:
        yield None
    finally:
        structlog.contextvars.reset_contextvars(**bound)
        _carried.reset(token)


@contextmanager
def _traced(name: str, kind: Kind, parent: TraceContext | None,
            attributes: Mapping[str, Any] | None) -> Iterator[Any]:
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = (TraceContextTextMapPropagator().extract(parent.attributes())
               if parent is not None else None)
    with _process.tracer.start_as_current_span(
            name, context=context, kind=SpanKind[kind.upper()],
            attributes=dict(attributes or {}), record_exception=False,
            set_status_on_exception=False) as active:
        bound = logs.bind(trace_id=format(active.get_span_context().trace_id, "032x"))
        try:
            yield active
        except BaseException as exc:
            _failed(active, exc)
            raise
        finally:
            structlog.contextvars.reset_contextvars(**bound)


def _failed(active: Any, exc: BaseException) -> None:
    """An exception marks the span an error, unless it is a client's mistake (a problem
    with a 4xx status: the request was refused, the service did not fail)."""
    from opentelemetry.trace import Status, StatusCode

    active.record_exception(exc)
    status = getattr(exc, "status", 500)
    if not isinstance(status, int) or status >= 500:
        active.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:300]))
