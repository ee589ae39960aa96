"""Gateway metrics beyond HTTP: messages received, by type, channel and outcome."""

from __future__ import annotations

from collections import Counter as Counter_
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from flask import current_app
from prometheus_client import CollectorRegistry, Counter, Gauge

from integration.broker.submission import Accepted
from integration.messages.problems import Problem
from integration.messages.registry import Registry

EXTENSION_KEY = "integration_metrics"
#: Outcome label by problem status.
_OUTCOMES = {409: "duplicate", 429: "throttled", 503: "unavailable"}
OUTCOMES = ("accepted", "rejected", *_OUTCOMES.values())
#: The gateway's channels, and the types each may carry (None: every public type).
CHANNELS: dict[str, tuple[str, ...] | None] = {
    "rest": None, "cloudevents": None, "websocket": None, "alertmanager": ("alert",)}
#: WebSocket frame kinds a client may send (anything else is counted as "unknown").
FRAME_KINDS = ("auth", "subscribe", "unsubscribe", "submit", "ping", "unknown")
#: Close codes the gateway uses or a client commonly sends; others are counted as "other".
CLOSE_CODES = ("1000", "1001", "1003", "1006", "1008", "1009", "1011", "1013")


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None, types: Registry) -> None:
        self.types = types
        self.received = Counter(
            "integration_messages_received_total",
            "Messages received, by type, channel (rest, cloudevents, alertmanager, direct, ...) "
            "and outcome (accepted, rejected, duplicate, throttled, unavailable).",
            ["type", "channel", "outcome"], registry=registry)
        self.sockets = Gauge(
            "integration_websocket_connections", "WebSockets open now.", registry=registry,
            multiprocess_mode="livesum")
        self.frames = Counter(
            "integration_websocket_frames_total", "Frames received from WebSocket clients, "
            "by kind (auth, subscribe, unsubscribe, submit, ping, unknown).", ["kind"],
            registry=registry)
        self.closed = Counter(
            "integration_websocket_closed_total", "WebSockets closed, by close code (1008: "
            "token expired or revoked; 1013: slow consumer dropped).", ["code"],
            registry=registry)
        self._start_from_zero()

    def _start_from_zero(self) -> None:
        """Every series exists from the start at 0, so ``rate()`` and ``increase()`` count the
        first messages after a restart too."""
        public = [t.name for t in self.types if not t.internal]
        for channel, kinds in CHANNELS.items():
            for kind in (*(kinds or public), "unknown"):
                for outcome in OUTCOMES:
                    self.received.labels(kind, channel, outcome)
        for frame in FRAME_KINDS:
            self.frames.labels(frame)
        for code in (*CLOSE_CODES, "other"):
            self.closed.labels(code)

    def frame(self, kind: Any) -> None:
        self.frames.labels(kind if kind in FRAME_KINDS else "unknown").inc()

    def socket_closed(self, code: Any) -> None:
        self.sockets.dec()
        label = str(code) if code is not None else "1006"  # no close frame: abnormal
        self.closed.labels(label if label in CLOSE_CODES else "other").inc()

    def type_label(self, value: Any) -> str:
        """A registered type name, or "unknown": labels stay bounded whatever is sent."""
        return value if isinstance(value, str) and value in self.types else "unknown"

    def count(self, raw: Any, result: Accepted | Problem, channel: str = "rest") -> None:
        self.received.labels(*self._labels(raw, result, channel)).inc()

    def count_all(self, raws: Sequence[Any], results: Sequence[Accepted | Problem],
                  channel: str = "rest") -> None:
        """Count a batch's items: one increment per (type, outcome), not one per item."""
        tally = Counter_(self._labels(raw, result, channel)
                         for raw, result in zip(raws, results, strict=True))
        for labels, number in tally.items():
            self.received.labels(*labels).inc(number)

    def _labels(self, raw: Any, result: Accepted | Problem, channel: str
                ) -> tuple[str, str, str]:
        kind = self.type_label(raw.get("type") if isinstance(raw, dict) else None)
        outcome = "accepted" if isinstance(result, Accepted) else \
            _OUTCOMES.get(result.status, "rejected")
        return kind, channel, outcome


def gateway_metrics() -> GatewayMetrics:
    return current_app.extensions[EXTENSION_KEY]


class Received:
    """One submitting request's count of received messages, on its channel; ``counted``
    says whether any was counted yet."""

    def __init__(self, metrics: GatewayMetrics, channel: str) -> None:
        self.metrics = metrics
        self.channel = channel
        self.counted = False

    def count(self, raw: Any, result: Accepted | Problem) -> None:
        self.metrics.count(raw, result, channel=self.channel)
        self.counted = True

    def count_all(self, raws: Sequence[Any], results: Sequence[Accepted | Problem]) -> None:
        self.metrics.count_all(raws, results, channel=self.channel)
        self.counted = True


@contextmanager
def receiving(channel: str, refused: Any = None) -> Iterator[Received]:
    """Count a submitting request's messages; a problem that refuses the request before any
    message was counted is counted once, as ``refused`` (the raw message it stands for)."""
    received = Received(gateway_metrics(), channel)
    try:
        yield received
    except Problem as problem:
        if not received.counted:
            received.count(refused, problem)
        raise
