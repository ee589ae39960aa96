"""Prometheus metrics of the workers, correct under the prefork pool.

prometheus_client's multiprocess mode: every pool process writes its own files in a
directory of this worker instance; the worker's main process serves their sum on
``INTEGRATION_METRICS_PORT``. Counters of recycled children stay (their files remain); the
in-progress gauge counts live processes only, and a child killed with SIGKILL is marked dead
at the next scrape. Labels are bounded: type, channel, status, error class, queue.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from integration.worker.lease import Lease

log = logging.getLogger(__name__)

#: Buckets in seconds: the usual 0.1, 0.5, 1, 2, 5 and finer ones below 0.1.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.0,
                    5.0, 10.0, 30.0, 60.0)
#: Waits and end-to-end times span retries: up to hours.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
                   300.0, 900.0, 3600.0)


def prepare_multiprocess(directory: str | None) -> str:
    """Choose this worker's metrics directory, before any metric is created."""
    path = Path(directory or tempfile.mkdtemp(prefix="integration-worker-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    # prometheus_client picks its value class when first imported, and Celery's command line
    # may already have imported it (Flower's plugin does): pick it again now the directory is
    # set, so the metrics created after this write to the shared files.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
    return str(path)


#: Where a message can come from (its record's channel) and where a delivery can leave it.
CHANNELS = ("rest", "cloudevents", "websocket", "alertmanager", "beat", "direct", "event")
STATUSES = ("succeeded", "retrying", "deferred", "held", "dead")
FIRING_OUTCOMES = ("accepted", "rejected", "duplicate", "unavailable", "refused")


class WorkerMetrics:
    """The workers' metric families (create once per process, after ``prepare_multiprocess``)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.processed = Counter(
            "integration_messages_processed_total",
            "Deliveries by where they left the message (status).",
            ["type", "channel", "status"])
        self.processing_seconds = Histogram(
            "integration_message_processing_seconds", "Time a delivery took in the worker.",
            ["type"], buckets=DURATION_BUCKETS)
        self.queue_wait_seconds = Histogram(
            "integration_message_queue_wait_seconds",
            "Time from being queued to an attempt starting.", ["type"], buckets=LATENCY_BUCKETS)
        self.end_to_end_seconds = Histogram(
            "integration_message_end_to_end_seconds",
            "Time from acceptance to a final status (succeeded or dead).", ["type"],
            buckets=LATENCY_BUCKETS)
        self.retries = Counter(
            "integration_message_retries_total", "Attempts that failed and will be retried.",
            ["type", "error"])
        self.dead = Counter("integration_dead_letters_total", "Messages that ended dead.",
                            ["type", "error"])
        self.deferred = Counter("integration_messages_deferred_total",
                                "Deliveries deferred (breaker open, rate limit).", ["type"])
        self.held = Counter("integration_messages_held_total",
                            "Actions held by loop detection.", ["type"])
        self.refused = Counter(
            "integration_tasks_refused_total",
            "Broker messages the worker refused without running (unknown task, malformed).",
            ["reason"])
        self.revoked = Counter(
            "integration_tasks_revoked_total",
            "Tasks revoked before or while running (revoked, terminated, expired).",
            ["type", "reason"])
        # The gateway's family of the same name: beat's firings are received in the worker.
        self.received = Counter(
            "integration_messages_received_total",
            "Messages received, by type, channel (beat) and outcome (accepted, rejected, "
            "duplicate, unavailable).", ["type", "channel", "outcome"])
        self.reconciled = Counter(
            "integration_messages_reconciled_total",
            "Messages the reconciler found that nothing held (a broker loss, a lost worker) "
            "and sent again, by the status their record had.", ["type", "status"])
        self.fenced = Counter(
            "integration_deliveries_fenced_total",
            "Deliveries whose finish, retry or deferral was refused because their claim had "
            "lapsed (a worker cut off or paused; another delivery took the message over).",
            ["type"])
        self.in_progress = Gauge("integration_messages_in_progress",
                                 "Deliveries running now.", ["type"],
                                 multiprocess_mode="livesum")

    def start_from_zero(self, types: Iterable[str]) -> None:
        """Every (type, channel, status) series of processed messages exists from the start
        at 0, so ``rate()`` and ``increase()`` count the first messages after a restart too.
        (An error label cannot be known in advance: the alert rules catch a new series.)"""
        for kind in types:
            for channel in CHANNELS:
                for status in STATUSES:
                    self.processed.labels(kind, channel, status)
            for outcome in FIRING_OUTCOMES:
                self.received.labels(kind, "beat", outcome)
            self.fenced.labels(kind)

    def observe(self, outcome: dict[str, Any], seconds: float) -> None:
        kind, status = outcome["type"], outcome["status"]
        if outcome.get("fenced"):
            # Where the message is now, another delivery left it (and counted it).
            self.fenced.labels(kind).inc()
            return
        error = outcome.get("error") or "none"
        self.processed.labels(kind, outcome["channel"], status).inc()
        self.processing_seconds.labels(kind).observe(seconds)
        if outcome.get("waited") is not None:
            self.queue_wait_seconds.labels(kind).observe(outcome["waited"])
        if outcome.get("total") is not None:
            self.end_to_end_seconds.labels(kind).observe(outcome["total"])
        if status == "retrying":
            self.retries.labels(kind, error).inc()
        elif status == "dead":
            self.dead.labels(kind, error).inc()
        elif status == "deferred":
            self.deferred.labels(kind).inc()
        elif status == "held":
            self.held.labels(kind).inc()
        for delivery in outcome.get("inline") or ():
            self.processed.labels(delivery, "event", "succeeded").inc()


_PID = re.compile(r"_(\d+)\.db$")


def mark_dead_processes(directory: str) -> None:
    """Drop the live gauges of pool processes that died (a SIGKILL runs no cleanup)."""
    from prometheus_client import multiprocess

    for path in Path(directory).glob("gauge_live*_*.db"):
        match = _PID.search(path.name)
        if not match:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)
        except PermissionError:
            continue


def serve(directory: str, port: int, host: str, cluster: ClusterState | None = None) -> Any:
    """Serve the summed metrics of this worker's processes; returns the server (or None)."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    class LiveOnly(MultiProcessCollector):
        def collect(self) -> Any:
            mark_dead_processes(directory)
            return super().collect()

    registry = CollectorRegistry()
    LiveOnly(registry, path=directory)
    if cluster is not None:
        registry.register(cluster)
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        # Another worker on this host holds the port, most often: this one runs without.
        log.warning("worker metrics not served: cannot listen on %s:%d (%s); set "
                    "INTEGRATION_METRICS_PORT to a free port for each worker on a host, or 0 "
                    "to turn it off", host, port, exc.strerror or exc)
        return None
    return server


def close(server: Any) -> None:
    with contextlib.suppress(Exception):
        server.shutdown()


class ClusterState:
    """Queue depths, ages and consumers, and breaker states: one value for the whole cluster,
    so only one worker (the holder of a short Redis lease, renewed at each scrape) exports
    them, and summing over workers does not multiply them."""

    MAX_BREAKERS = 50

    def __init__(self, client: Any, prefix: str, worker_id: str,
                 depths: Any, breakers: Any, queues: list[str], *,
                 consumers: Callable[[], Mapping[str, int]] | None = None,
                 ages: Callable[[Sequence[str]], Mapping[str, float]] | None = None) -> None:
        self.lease = Lease(client, f"{prefix}:metrics-leader", worker_id, 60)
        self.depths = depths
        self.breakers = breakers
        self.queues = queues
        self.consumers = consumers
        self.ages = ages

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        try:
            if not self.lease.held():
                return
            depth = GaugeMetricFamily("integration_queue_depth",
                                      "Messages waiting in each queue (one worker exports it).",
                                      labels=["queue"])
            for queue, count in self.depths(self.queues).items():
                depth.add_metric([queue], count)
            yield depth
            yield from self._queue_families()
            state = GaugeMetricFamily(
                "integration_breaker_state",
                "1 for each breaker's current state (closed, open, half-open).",
                labels=["breaker", "state"])
            described = self.breakers()
            for breaker in described[:self.MAX_BREAKERS]:
                for name in ("closed", "open", "half-open"):
                    state.add_metric([breaker["name"], name],
                                     1.0 if breaker["state"] == name else 0.0)
            yield state
            opened = GaugeMetricFamily("integration_breakers_open",
                                       "How many breakers are open (all of them, uncapped).")
            opened.add_metric([], sum(b["state"] == "open" for b in described))
            yield opened
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail on a Redis hiccup
            log.warning("cluster metrics unavailable: %s", exc)

    def _queue_families(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        if self.ages is not None:
            age = GaugeMetricFamily(
                "integration_queue_oldest_age_seconds",
                "Seconds the oldest waiting message of each queue has waited (0: empty).",
                labels=["queue"])
            for queue, seconds in self.ages(self.queues).items():
                age.add_metric([queue], seconds)
            yield age
        if self.consumers is not None:
            consumed = GaugeMetricFamily(
                "integration_queue_consumers",
                "Live workers consuming each queue (from their heartbeats).", labels=["queue"])
            counts = self.consumers()
            for queue in dict.fromkeys([*self.queues, *sorted(counts)]):
                consumed.add_metric([queue], counts.get(queue, 0))
            yield consumed
