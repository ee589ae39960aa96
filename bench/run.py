"""One benchmark run: start everything, measure each figure and its baseline round after
round (interleaved, so machine noise hits both alike), and summarise as ratios."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import psutil
import redis
from kombu import Connection

from bench import baselines, breakdown, loadgen, reconcile, servers
from bench.machine import describe
from bench.stack import CpuMeter, RssSampler, Server, Stack, Worker
from integration.security.tokens import issue_token
from integration.settings import Settings

SUBMIT = "/api/v1/messages"
#: The policy the gateway runs with: a rate limit that is counted but never reached.
POLICY = """\
default_rate_limit: "50/second"
roles:
  bench:
    submit: ["*"]
    read: any
    rate_limit: "1000000/second"
"""


#: The open-loop latency runs of a round, in order (figures ``<name>_p50_ms`` etc.): ours at
#: half of its peak, then the same arrivals against the baselines and the replica wait.
PACED = ("submit", "hello_at_ours", "guarded_at_ours", "replica_wait_at_ours")
#: The replica-wait gateway's settings: one replica acknowledges each flush.
REPLICA_WAIT = {"INTEGRATION_REDIS_REPLICA_WAIT": "1",
                "INTEGRATION_REDIS_REPLICA_WAIT_TIMEOUT_MS": "1000"}
#: Distinct request bodies the load generator cycles through.
BODIES = 64
_ACCEPTED = re.compile(rb'"accepted":\s*(\d+)')


@dataclass(frozen=True)
class Plan:
    """Sizes of a run; ``smoke`` shrinks them to seconds."""

    rounds: int = 5
    seconds: float = 2.0
    warmup: float = 0.5
    connections: int = 32
    batch: int = 500
    #: Enough to keep both gateway processes busy while each waits on Redis for a batch
    #: (with four, the cores were not all busy; see bench/README.md).
    batch_connections: int = 8
    e2e_messages: int = 1000
    e2e_batch: int = 100
    concurrency: int = 2
    soak_seconds: float = 0.0
    #: Which groups of figures to measure (``submit``, ``batch``, ``e2e``); all by default.
    groups: tuple[str, ...] = ("submit", "batch", "e2e")
    #: The end-to-end figures that repeat another under one changed setting (no task
    #: events, two worker instances): the same code, so only ``--variants`` runs them.
    variants: bool = False
    #: End to end with the consumer delivered as a message of its own rather than inline
    #: (``--variants``; a smoke run checks that such a delivery still works).
    queued_consumer: bool = False
    #: Also measure single and batch submits with the replica wait on (a replica of the
    #: run's Redis, started by the run); a smoke run leaves them out, as the three below.
    replica: bool = True
    #: Single submits and hello-world under the other WSGI servers (bench/servers.py).
    servers: bool = True
    #: Single submits with tracing on (spans exported to the hello-world app).
    tracing: bool = True
    #: The CPU of a submit and of a worker's message by component, once after the rounds.
    breakdown: bool = True
    #: Seconds of steady load the gateway's breakdown is measured over.
    breakdown_seconds: float = 5.0

    @classmethod
    def smoke(cls) -> Plan:
        return cls(rounds=1, seconds=0.5, warmup=0.1, connections=4, batch=100,
                   batch_connections=2, e2e_messages=100, e2e_batch=50,
                   queued_consumer=True, replica=False, servers=False, tracing=False,
                   breakdown=False)


def metric(n: int) -> dict[str, Any]:
    """A realistic monitoring sample."""
    return {"type": "metric", "source": f"bench/host-{n % 50}",
            "data": {"name": "cpu_usage_percent", "value": float(n % 100), "unit": "percent",
                     "labels": {"host": f"host-{n % 50}", "region": "eu-west-1"},
                     "thresholds": {"warning": 80, "critical": 95}}}


def event(n: int) -> dict[str, Any]:
    return {"type": "event", "source": "bench/e2e", "data": {"n": n, "kind": "bench"}}


@dataclass
class Results:
    """Per-round figures (name -> one value per round) and what describes them."""

    rounds: list[dict[str, float]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.rounds[-1][name] = value
        print(f"  {name:<28} {value:12.1f}", flush=True)


class Run:
    def __init__(self, plan: Plan, settings: Settings, workdir: Path) -> None:
        self.plan = plan
        self.settings = settings
        self.workdir = workdir
        secret = secrets.token_urlsafe(48)
        policy = workdir / "policy.yaml"
        policy.write_text(POLICY)
        self.env = {"INTEGRATION_JWT_SECRET": secret, "INTEGRATION_POLICY_FILE": str(policy),
                    "INTEGRATION_ENV": "production", "INTEGRATION_LOG_FORMAT": "json",
                    "INTEGRATION_LOOP_STAGES": "", "INTEGRATION_CONSUMER_MODULES": "",
                    "INTEGRATION_LOG_LEVEL": "INFO"}
        self.token = issue_token(secret, "bench", ["bench"], 3600)
        self.stack = Stack(workdir, settings, self.env)
        self.rss = RssSampler()
        self.results = Results()
        self._worker: Worker | None = None
        #: The gateway whose flushes wait for a replica, when the run measures it.
        self._replica_wait: Any = None
        #: Gateways beside the production one: by server (gthread, granian), "tracing",
        #: "sampled"; and hello-world under each other server.
        self.gateways: dict[str, Server] = {}
        self.hellos: dict[str, Server] = {}
        self._bodies: dict[tuple[int, int, Callable[[int], dict[str, Any]]], bytes] = {}

    # -- request bodies ----------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                "Idempotency-Key": uuid.uuid4().hex}

    def single(self, n: int) -> bytes:
        return loadgen.http_request(SUBMIT, self._body(n % BODIES, 1, metric), self._headers())

    def batch_of(self, size: int, make: Callable[[int], dict[str, Any]]
                 ) -> Callable[[int], bytes]:
        def build(n: int) -> bytes:
            return loadgen.http_request(SUBMIT, self._body(n % BODIES, size, make),
                                        self._headers())
        return build

    def _body(self, slot: int, size: int, make: Callable[[int], dict[str, Any]]) -> bytes:
        """Request bodies are encoded once per slot and reused (the gateway gives every
        message its own id), so the load generator, which shares the machine's cores with
        the server, spends microseconds per request, not milliseconds per batch. Each
        request still has its own Idempotency-Key."""
        key = (slot, size, make)
        body = self._bodies.get(key)
        if body is None:
            items = [make(slot * size + i) for i in range(size)]
            body = self._bodies[key] = json.dumps(items[0] if size == 1 else items).encode()
        return body

    # -- the run -----------------------------------------------------------------------------
    def execute(self) -> Results:
        plan = self.plan
        url = self.stack.start_redis()
        self.client = redis.Redis.from_url(url)
        amqp = "batch" in plan.groups and _reachable(self.settings.bench_amqp_url)
        self.results.notes.update(describe(url))
        self.results.notes.update(
            redis=url.rsplit("@", 1)[-1], rabbitmq=amqp, plan=plan.__dict__,
            cores=psutil.cpu_count(),
            gunicorn={"workers": self.settings.gateway_workers,
                      "worker_class": self.settings.gateway_worker_class,
                      "worker_connections": self.settings.gateway_worker_connections},
            load_generator="bench.loadgen (asyncio, keep-alive; open loop from intended "
                           "send times)")
        ours = self.stack.gateway("gateway")
        apps = {name: self.stack.baseline_server(name) for name in ("hello", "guarded", "naive")}
        self._start_variants(apps["hello"].port)
        ours_amqp = self.stack.gateway("gateway-amqp",
                                       INTEGRATION_BROKER_URL=self.settings.bench_amqp_url) \
            if amqp else None
        if plan.replica and {"submit", "batch"} & set(plan.groups) and \
                self.stack.start_replica() is not None:
            self._replica_wait = self.stack.gateway("gateway-replica-wait", **REPLICA_WAIT)
        self.results.notes["replica_wait"] = self._replica_wait is not None
        gateways = (ours, ours_amqp, self._replica_wait, *self.gateways.values())
        for server in (*gateways, *apps.values(), *self.hellos.values()):
            if server is not None:
                server.wait_ready("/healthz" if server in gateways else SUBMIT)
        self.rss.watch("gateway", ours.children)
        self.rss.watch("worker", lambda: self._worker.pids() if self._worker else [])
        self.rss.start()
        try:
            for number in range(1, plan.rounds + 1):
                print(f"round {number}/{plan.rounds}", flush=True)
                self.results.rounds.append({})
                self._round(ours, {name: app.port for name, app in apps.items()},
                            ours_amqp, amqp)
                for server in (ours, *apps.values(), ours_amqp, self._replica_wait,
                               *self.gateways.values(), *self.hellos.values()):
                    if server is not None:
                        server.check()  # a server that died mid-round leaves no figure
            self._breakdowns(ours)
            if plan.soak_seconds:
                self._soak(ours.port)
        finally:
            self.rss.stop()
            self.stack.close()
        self.results.notes["rss_peak_mb"] = self.rss.peak_mb
        # Beside the load average at the start: whether other work shared the machine.
        self.results.notes["machine"]["load_average_end"] = list(os.getloadavg())
        return self.results

    def _start_variants(self, hello_port: int) -> None:
        """The gateways and hello-world apps measured beside the production pair: under
        the other servers, with tracing on, and sampled by component."""
        plan = self.plan
        if "submit" not in plan.groups:
            return
        if plan.servers:
            for server in servers.SERVERS[1:]:
                if not servers.available(server):
                    self.results.notes.setdefault("servers_skipped", []).append(server)
                    continue
                self.gateways[server] = self.stack.gateway(f"gateway-{server}", server=server)
                self.hellos[server] = self.stack.baseline_server("hello", server=server)
        if plan.tracing:
            # Spans go to hello-world's /v1/traces, which answers every export with 202.
            self.gateways["tracing"] = self.stack.gateway(
                "gateway-tracing", INTEGRATION_OTLP_ENDPOINT=f"http://127.0.0.1:{hello_port}")
        if plan.breakdown:
            self.stack.samples("gateway-sampled")
            self.gateways["sampled"] = self.stack.gateway("gateway-sampled")

    def _round(self, ours: Any, apps: dict[str, int], ours_amqp: Any, amqp: bool) -> None:
        plan, add = self.plan, self.results.add
        envelope = metric(0)
        self._flush()
        add("send_task_per_s", baselines.send_task_rate(self.stack.redis_url, envelope,
                                                        plan.seconds))
        if "submit" in plan.groups:
            self._singles(ours, apps)
        if "batch" in plan.groups:
            self._flush()
            meter = CpuMeter({"gateway": ours.children, "redis": self._redis_pids,
                              "loadgen": lambda: [os.getpid()]})
            rate, cpu_us = self._batches(ours.port, "batch submit", meter)
            add("batch_redis_msgs_per_s", rate)
            for name, micros in cpu_us.items():
                add(f"batch_redis_cpu_{name}_us", micros)
            # The reconciler's survey over the messages that figure left queued.
            store = self.settings.model_copy(update={"redis_url": self.stack.redis_url})
            for name, value in reconcile.survey_cost(store, self._redis_pids).items():
                add(name, value)
            if self._replica_wait is not None:
                self._flush()
                add("batch_redis_replica_wait_msgs_per_s", self._batches(
                    self._replica_wait.port, "batch submit, replica wait")[0])
            if amqp:
                add("kombu_batch_amqp_msgs_per_s", baselines.kombu_batch_rate(
                    self.settings.bench_amqp_url, envelope, plan.seconds))
                add("batch_amqp_msgs_per_s", self._batches(ours_amqp.port,
                                                           "batch submit on RabbitMQ")[0])
                _purge_amqp(self.settings.bench_amqp_url, "metric")
        if "e2e" in plan.groups:
            raw = self._drain_raw()
            add("e2e_raw_worker_msgs_per_s", raw)
            add("e2e_event_msgs_per_s", self._end_to_end(ours.port, raw, consumer=None,
                                                         figure="e2e_event", gateway=ours))
            if plan.variants:
                add("e2e_event_no_task_events_msgs_per_s", self._end_to_end(
                    ours.port, raw, consumer=None, task_events=False))
            if plan.queued_consumer:
                add("e2e_consumer_msgs_per_s", self._end_to_end(
                    ours.port, raw, consumer="queued", figure="e2e_consumer", gateway=ours))
            add("e2e_inline_consumer_msgs_per_s", self._end_to_end(
                ours.port, raw, consumer="inline", figure="e2e_inline_consumer",
                gateway=ours))
            if plan.variants:
                add("e2e_event_2_workers_msgs_per_s",
                    self._end_to_end(ours.port, raw, consumer=None, instances=2))

    def _singles(self, ours: Any, apps: dict[str, int]) -> None:
        """Single submits at peak against the HTTP baselines, then latency at half of peak."""
        plan, add = self.plan, self.results.add
        waiting = self._replica_wait
        loops = [*((f"{app}_post_per_s", apps[app]) for app in apps),
                 ("submit_per_s", ours.port)]
        if waiting is not None:
            loops.append(("submit_replica_wait_per_s", waiting.port))
        if "tracing" in self.gateways:
            loops.append(("submit_tracing_per_s", self.gateways["tracing"].port))
        for server, hello in self.hellos.items():  # the same pair under each other server
            loops += [(f"hello_{server}_post_per_s", hello.port),
                      (f"submit_{server}_per_s", self.gateways[server].port)]
        for name, port in loops:
            self._flush()
            outcome = loadgen.closed_loop("127.0.0.1", port, self.single,
                                          connections=plan.connections, duration=plan.seconds,
                                          warmup=plan.warmup)
            _expect(outcome, name)
            add(name, outcome.rate)
        # Latency at half of our peak, then the same arrivals against hello-world (next to
        # no work per request: the tail of this machine, server and generator) and
        # `guarded` (the token check and rate-limit hit every request of ours makes first).
        figures = self.results.rounds[-1]
        ours_rate = figures["submit_per_s"] / 2
        runs = {"submit": (ours.port, ours_rate),
                "hello_at_ours": (apps["hello"], ours_rate),
                "guarded_at_ours": (apps["guarded"], ours_rate)}
        if waiting is not None:  # the same arrivals, each flush waiting for the replica
            runs["replica_wait_at_ours"] = (waiting.port, ours_rate)
        for name in (n for n in PACED if n in runs):
            port, rate = runs[name]
            self._flush()
            paced = loadgen.open_loop("127.0.0.1", port, self.single, rate=rate,
                                      duration=2 * plan.seconds)
            _expect(paced, f"paced {name}")
            add(f"{name}_paced_rate", paced.rate)
            add(f"{name}_p50_ms", paced.percentile(50))
            add(f"{name}_p99_ms", paced.percentile(99))
            add(f"{name}_p999_ms", paced.percentile(99.9))

    def _breakdowns(self, ours: Server) -> None:
        """The CPU of a single submit (the sampled gateway at its peak) and of a worker's
        ``event`` message (a sampled worker draining pre-filled messages), by component."""
        plan = self.plan
        found = []
        sampled = self.gateways.get("sampled")
        if sampled is not None:
            print("CPU by component: single submits", flush=True)
            self._flush()
            window = breakdown.Window(self.stack.sampled["gateway-sampled"],
                                      {"gateway": sampled.children}, self._redis_pids)
            outcome = loadgen.closed_loop("127.0.0.1", sampled.port, self.single,
                                          connections=plan.connections,
                                          duration=plan.breakdown_seconds,
                                          warmup=plan.warmup, measuring=window.start)
            _expect(outcome, "single submits, sampled")
            found.append(window.stop("single submit, per request", outcome.completed))
        if plan.breakdown and "e2e" in plan.groups:
            print("CPU by component: a worker's event messages", flush=True)
            found.append(self._worker_breakdown(ours))
        if found:
            self.results.notes["cpu_breakdown"] = [b.to_json() for b in found]

    def _worker_breakdown(self, ours: Server) -> breakdown.Breakdown:
        """A sampled worker drains ``event`` messages submitted beforehand; the window is
        its steady state, from a tenth to nine tenths of them finished."""
        plan = self.plan
        self._flush()
        messages = 2 * plan.e2e_messages
        outcome = loadgen.open_loop("127.0.0.1", ours.port, self.batch_of(plan.e2e_batch, event),
                                    rate=messages / plan.e2e_batch, duration=1.0,
                                    connections=4)
        _expect(outcome, "pre-fill for the worker's breakdown")
        total = cast(int, self.client.zcard(f"{self.settings.key_prefix}:idx:type:event"))
        index = f"{self.settings.key_prefix}:idx:status:succeeded"
        samples = self.stack.samples("worker-sampled")
        worker = self._start_worker("worker-sampled", "tasks", ["event"], task_events=True)
        window = breakdown.Window(samples, {"worker main": lambda: [worker.popen.pid],
                                            "worker pool": worker.children},
                                  self._redis_pids)
        try:
            _wait(lambda: cast(int, self.client.zcard(index)) >= total // 10, 300,
                  "a tenth of the messages finished")
            first = cast(int, self.client.zcard(index))
            window.start()
            _wait(lambda: cast(int, self.client.zcard(index)) >= total * 9 // 10, 300,
                  "nine tenths of the messages finished")
            done = cast(int, self.client.zcard(index)) - first
            return window.stop("a worker's event message, per message", done)
        finally:
            self._stop_worker(worker)

    def _batches(self, port: int, what: str, meter: CpuMeter | None = None
                 ) -> tuple[float, dict[str, float]]:
        """Accepted messages per second of batch submissions, and with ``meter`` the CPU
        microseconds per accepted message by process group, from the end of the warm-up to
        the last answer. An item refused with 503 (a broker that did not confirm within the
        publish timeout) is not counted, and the refusals are noted."""
        plan = self.plan
        outcome = loadgen.closed_loop("127.0.0.1", port, self.batch_of(plan.batch, metric),
                                      connections=plan.batch_connections,
                                      duration=plan.seconds, warmup=plan.warmup,
                                      items=_accepted_items,
                                      measuring=meter.start if meter else None)
        cpu_us = {name: seconds / max(outcome.items, 1) * 1e6
                  for name, seconds in meter.stop().items()} if meter is not None else {}
        if outcome.items == 0:
            raise RuntimeError(f"{what}: nothing accepted; answers {dict(outcome.statuses)}")
        refused = outcome.completed * plan.batch - outcome.items
        if refused:
            self.results.notes.setdefault("refused_batch_items", {}).setdefault(
                what, []).append(refused)
        return outcome.items / outcome.elapsed, cpu_us

    def _redis_pids(self) -> list[int]:
        server = self.stack.redis
        return [server.process.pid] if server is not None and server.process else []

    def _flush(self) -> None:
        """A clean database before each figure: queues left by the last one must neither
        slow this one down nor trip the queue-depth limit."""
        self.client.flushdb()

    # -- end to end ----------------------------------------------------------------------------
    def _e2e_meter(self, workers: list[Worker], gateway: Any = None) -> CpuMeter:
        """CPU of each part of an end-to-end figure: the gateway, Redis, the workers' main
        processes (which fetch and acknowledge every message) and their pool processes."""
        groups: dict[str, Callable[[], list[int]]] = {
            "redis": self._redis_pids,
            "worker_main": lambda: [w.popen.pid for w in workers],
            "worker_pool": lambda: [pid for w in workers for pid in w.children()],
        }
        if gateway is not None:
            groups["gateway"] = gateway.children
            groups["loadgen"] = lambda: [os.getpid()]
        return CpuMeter(groups)

    def _record_cpu(self, figure: str, cpu: dict[str, float], messages: int) -> None:
        """µs of CPU per message of each part, and the machine's (the parts add up to it
        but for what other processes used meanwhile)."""
        for name, seconds in cpu.items():
            self.results.add(f"{figure}_cpu_{name}_us", seconds * 1e6 / max(messages, 1))

    def _drain_raw(self) -> float:
        """A stock worker with a no-op task draining a pre-filled queue: first to last task."""
        plan = self.plan
        self._flush()
        app = baselines.raw_celery(self.stack.redis_url)
        with app.producer_or_acquire() as producer:
            for n in range(plan.e2e_messages):
                app.send_task(baselines.NOOP_TASK, args=(event(n),),
                              kwargs={"total": plan.e2e_messages},
                              queue=baselines.NOOP_QUEUE, producer=producer)
        worker = self._start_worker("raw-worker", "bench.noop", [baselines.NOOP_QUEUE])
        meter = self._e2e_meter([worker])
        meter.start()
        try:
            _wait(lambda: self.client.exists("bench:noop:last"), 300, "the raw worker")
            self._record_cpu("e2e_raw", meter.stop(), plan.e2e_messages)
            first, last = (float(cast(bytes, self.client.get(k)) or 0)
                           for k in ("bench:noop:first", "bench:noop:last"))
        finally:
            self._stop_worker(worker)
        return (plan.e2e_messages - 1) / max(last - first, 1e-6)

    def _end_to_end(self, port: int, rate: float, *, consumer: str | None = None,
                    instances: int = 1, figure: str | None = None, gateway: Any = None,
                    task_events: bool = True, **env: str) -> float:
        """Events submitted through the gateway (batches, paced at the raw worker's rate)
        while our worker processes them; messages per second from the first acceptance to
        the last completion (the consumer's delivery, when one is subscribed). With
        ``instances`` > 1, that many worker processes of the same concurrency share the
        queue (several instances on one host). Workers send task events, as the dev stack
        and compose run them, unless ``task_events`` is False. ``env`` goes to the workers
        (settings)."""
        plan = self.plan
        self._flush()
        queues = ["event"]
        if consumer == "queued":
            queues.append("consumer.bench-sink")
            env["INTEGRATION_CONSUMER_MODULES"] = "bench.consumers:CONSUMERS"
        elif consumer == "inline":
            env["INTEGRATION_CONSUMER_MODULES"] = "bench.consumers:INLINE"
        workers = [self._start_worker(f"worker-{n}", "tasks", queues,
                                      task_events=task_events, **env)
                   for n in range(instances)]
        meter = self._e2e_meter(workers, gateway)
        meter.start()
        try:
            requests = max(1, plan.e2e_messages // plan.e2e_batch)
            outcome = loadgen.open_loop(
                "127.0.0.1", port, self.batch_of(plan.e2e_batch, event),
                rate=rate / plan.e2e_batch, duration=requests / (rate / plan.e2e_batch),
                connections=16)
            _expect(outcome, "end-to-end submit")
            # What was accepted, from the store (the paced generator may send fewer
            # requests than planned when the run is short): each event, plus its delivery.
            sent = cast(int, self.client.zcard(f"{self.settings.key_prefix}:idx:type:event"))
            total = sent * (2 if consumer else 1)
            index = f"{self.settings.key_prefix}:idx:status:succeeded"
            _wait(lambda: cast(int, self.client.zcard(index)) >= total, 600,
                  "every message finished")
            if figure is not None:
                self._record_cpu(figure, meter.stop(), sent)
        finally:
            for worker in workers:
                self._stop_worker(worker)
        ids = [m.decode() for m in cast(list[bytes], self.client.zrange(index, 0, -1))]
        pipe = self.client.pipeline(transaction=False)
        for message_id in ids:
            pipe.hmget(f"{self.settings.key_prefix}:msg:{message_id}",
                       ["accepted_ms", "finished_at"])
        accepted, finished = [], []
        for accepted_ms, finished_at in pipe.execute():
            accepted.append(int(accepted_ms) / 1000)
            finished.append(_epoch(finished_at.decode()))
        return sent / max(max(finished) - min(accepted), 1e-6)

    def _start_worker(self, name: str, app: str, queues: list[str], *,
                      task_events: bool = False, **env: str) -> Worker:
        worker = self.stack.worker(name, app, queues, self.plan.concurrency,
                                   task_events=task_events, **env)
        worker.wait_ready()
        self._worker = worker
        return worker

    def _stop_worker(self, worker: Worker) -> None:
        self._worker = None
        self.stack.stop(worker)

    # -- soak --------------------------------------------------------------------------------
    def _soak(self, port: int) -> None:
        """Half of the first round's peak for ``soak_seconds``; gateway RSS over time."""
        rate = self.results.rounds[0]["submit_per_s"] / 2
        print(f"soak: {self.plan.soak_seconds:.0f} s at {rate:.0f}/s", flush=True)
        start_mb = self.rss.sample().get("gateway", 0.0)
        self.rss.series["gateway"] = []
        deadline = time.monotonic() + self.plan.soak_seconds
        statuses: dict[int, int] = {}
        while (left := deadline - time.monotonic()) > 0:
            self._flush()  # the unconsumed metric queue must not grow for five minutes
            outcome = loadgen.open_loop("127.0.0.1", port, self.single, rate=rate,
                                        duration=min(30.0, left))
            for status, n in outcome.statuses.items():
                statuses[status] = statuses.get(status, 0) + n
        series = [mb for _, mb in self.rss.series.get("gateway", [])]
        tenth = max(1, len(series) // 10)
        self.results.notes["soak"] = {
            "seconds": self.plan.soak_seconds, "rate": rate, "statuses": statuses,
            "gateway_rss_start_mb": start_mb,
            "gateway_rss_first_tenth_mb": statistics.mean(series[:tenth]) if series else None,
            "gateway_rss_last_tenth_mb": statistics.mean(series[-tenth:]) if series else None,
            "gateway_rss_peak_mb": max(series) if series else None,
        }


def _expect(outcome: loadgen.Outcome, what: str) -> None:
    """A figure only counts if the requests succeeded."""
    failed = {s: n for s, n in outcome.statuses.items() if not 200 <= s < 300}
    if outcome.ok == 0 or sum(failed.values()) > 0.01 * outcome.completed:
        raise RuntimeError(f"{what}: answers {dict(outcome.statuses)}")
    if outcome.retries:
        print(f"  ({what}: {outcome.retries} request(s) sent again after the server closed "
              "an idle connection)", flush=True)


def _accepted_items(status: int, body: bytes) -> int:
    """The ``accepted`` count of a batch answer (a 503 problem document accepted none); read
    from the answer's head, where the gateway writes it, without decoding every item."""
    if status != 202:
        return 0
    found = _ACCEPTED.search(body, 0, 200)
    return int(found.group(1)) if found else int(json.loads(body).get("accepted", 0))


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _epoch(iso_time: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso_time).timestamp()


def _reachable(amqp_url: str) -> bool:
    try:
        with Connection(amqp_url, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
        return True
    except Exception:  # noqa: BLE001 - any failure: skip RabbitMQ
        return False


def _purge_amqp(amqp_url: str, queue: str) -> None:
    # A queue never declared has nothing to purge.
    with Connection(amqp_url) as connection, contextlib.suppress(Exception):
        connection.channel().queue_purge(queue)
