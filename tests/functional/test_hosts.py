"""Real hosts on one machine: gateways in ``gw1`` and ``gw2`` behind HAProxy, workers in
``w1`` and ``w2``, Redis in ``r1``, each a network namespace with an address of its own
(tests/support/netns.py, as root). A host's link is cut in the middle of a burst of effectful
messages and brought back; clients retry with their ``Idempotency-Key``.

A scenario is a burst, a cut, the checks of what clients and the downstream saw, a heal and
the check that the cluster took the host back by itself. The Redis master's host has a
cluster of its own (``sentinel_cluster``): Redis and a sentinel in each of ``r1``-``r3``, and
gateways and workers that know only the sentinels.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import redis.sentinel

from integration.ops.embedded_redis import free_port, redis_server_binary
from integration.security.tokens import issue_token
from integration.worker.heartbeats import Heartbeats
from tests.conftest import NO_REDIS, TEST_SECRET, wait_for
from tests.support import haproxy
from tests.support.host_sentinels import (
    MASTER_NAME,
    REDIS_HOSTS,
    REDIS_PORT,
    SENTINEL_PORT,
    replicating,
    sentinels_master,
    sentinels_ready,
    start_redis,
    start_sentinel,
)
from tests.support.netns import Hosts, clean_stale, require_hosts, wait_listening
from tests.support.recovery import FAST_RECOVERY, CountingTarget, action, fast_bound

GATEWAY_PORT = 8000
GATEWAYS, WORKERS = ("gw1", "gw2"), ("w1", "w2")
#: What a client waits for one answer, and for one message to be taken in spite of retries.
ANSWER_TIMEOUT, SUBMIT_DEADLINE = 4.0, 30.0
#: Answers a client retries with the same key: the balancer or a gateway could not finish.
RETRIED = {409, 502, 503, 504}


@dataclass
class Cluster:
    hosts: Hosts
    url: str  # HAProxy's frontend
    stats: Path  # HAProxy's stats socket
    target: CountingTarget
    store: redis.Redis  # r1's Redis, reached from the root namespace
    token: str
    workers: dict[str, subprocess.Popen[bytes]]
    env: dict[str, str] = field(default_factory=dict)  # the workers' environment


def fetch(url: str, token: str, body: dict[str, Any] | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """One request on a connection of its own (so each is balanced on its own); status 0 when
    no answer came."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json",
        **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=ANSWER_TIMEOUT) as response:  # noqa: S310
            return int(response.status), _json(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), _json(exc.read())
    except (OSError, http.client.HTTPException):  # no answer, or one cut short
        return 0, {}


def _json(body: bytes) -> dict[str, Any]:
    """The body as JSON; HAProxy's own answers (502, 504) are HTML."""
    try:
        found = json.loads(body)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


@dataclass
class Answer:
    """One attempt of a client: the key, when it was sent and answered, and the answer."""

    key: str
    sent: float
    answered: float
    status: int
    body: dict[str, Any]


@dataclass
class Taken:
    """What a client was finally told about one key."""

    message_id: str
    attempts: int


class RetryingBurst:
    """Submits ``count`` actions through the balancer from ``clients`` threads at once, each
    with an ``Idempotency-Key`` of its own, sending the same request again on no answer, 409,
    502, 503 or 504 until it is taken."""

    def __init__(self, cluster: Cluster, count: int, source: str, clients: int = 4) -> None:
        self.cluster, self.count, self.source = cluster, count, source
        self.taken: dict[str, Taken] = {}
        self.refused: dict[str, tuple[int, dict[str, Any]]] = {}
        self.ledger: list[Answer] = []  # every attempt's answer, in order
        self._next = iter(range(count))
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True)
                         for _ in range(clients)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> bool:
        """Whether every client finished within ``timeout``."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _client(self) -> None:
        while True:
            with self._lock:
                index = next(self._next, None)
            if index is None:
                return
            self._submit(index)

    def _submit(self, index: int) -> None:
        key = uuid.uuid4().hex
        body = action(index, self.source)
        body["data"]["action"] = f"{self.source}-{index}"  # no loop guard in the way
        deadline, attempts = time.monotonic() + SUBMIT_DEADLINE, 0
        while True:
            attempts += 1
            sent = time.monotonic()
            status, answer = fetch(f"{self.cluster.url}/api/v1/messages",
                                   self.cluster.token, body, {"Idempotency-Key": key})
            with self._lock:
                self.ledger.append(Answer(key, sent, time.monotonic(), status, answer))
            if status == 202:
                with self._lock:
                    self.taken[key] = Taken(str(answer["id"]), attempts)
                return
            if (status and status not in RETRIED) or time.monotonic() > deadline:
                with self._lock:
                    self.refused[key] = (status, answer)
                return
            time.sleep(0.1)

    def retried(self) -> int:
        return sum(1 for taken in self.taken.values() if taken.attempts > 1)


@pytest.fixture(scope="session")
def stale_hosts_removed() -> None:
    """Namespaces and links that killed runs left behind, removed once a session (those of
    runs still going are theirs)."""
    require_hosts()
    clean_stale()


def start_services(hosts: Hosts, env: dict[str, str], directory: Path
                   ) -> tuple[str, Path, dict[str, subprocess.Popen[bytes]]]:
    """Gateways in gw1 and gw2, workers in w1 and w2 and HAProxy in front of the gateways,
    started with ``env`` and waited for: HAProxy's URL, its stats socket and the workers."""
    gateways = {name: hosts.run_in(name, [
        sys.executable, "-m", "integration", "serve", "--host", hosts.address(name),
        "--port", str(GATEWAY_PORT)], env, f"{name}.log") for name in GATEWAYS}
    workers = {name: start_worker(hosts, name, env) for name in WORKERS}
    port, stats = free_port(), directory / "haproxy.sock"
    config = directory / "haproxy.cfg"
    config.write_text(haproxy.config(port, {
        name: f"{hosts.address(name)}:{GATEWAY_PORT}" for name in GATEWAYS}, stats))
    balancer = hosts.run_here([haproxy.haproxy_binary(), "-db", "-f", str(config)], env,
                              "haproxy.log")
    for name, process in gateways.items():
        wait_listening(hosts.address(name), GATEWAY_PORT, process, f"gateway in {name}")
    for name, process in workers.items():
        wait_for(lambda n=name, p=process: p.poll() is None and  # type: ignore[misc]
                 " ready." in hosts.log(f"{n}.log"), timeout=60,
                 message=f"worker in {name} ready")
    wait_for(lambda: balancer.poll() is None and all(
        haproxy.status(stats, name) == "UP" for name in GATEWAYS),
        timeout=20, message="HAProxy sees both gateways up")
    return f"http://127.0.0.1:{port}", stats, workers


def start_worker(hosts: Hosts, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return hosts.run_in(name, [
        sys.executable, "-m", "celery", "-A", "tasks", "worker", "--loglevel", "INFO",
        "--concurrency", "2", "--hostname", f"{name}@%h", "--queues", "action",
        "--without-gossip", "--without-mingle"], env, f"{name}.log")


def hosts_env(hosts: Hosts, target: CountingTarget, directory: Path) -> dict[str, str]:
    """What gateways and workers share, Redis aside."""
    return {**os.environ, **FAST_RECOVERY,
            "INTEGRATION_RULES_FILE": str(target.rules_file(directory)),
            "INTEGRATION_EGRESS_ALLOWLIST": f"{hosts.gateway_address}/32",
            "INTEGRATION_GATEWAY_WORKERS": "1"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, test_environment: dict[str, str],
            stale_hosts_removed: None) -> Iterator[Cluster]:
    """Redis in r1, gateways in gw1 and gw2, workers in w1 and w2 (fast recovery), HAProxy on
    the root namespace's loopback and the counting target on its bridge address."""
    directory = tmp_path_factory.mktemp("hosts")
    with Hosts(["gw1", "gw2", "w1", "w2", "r1"], directory) as hosts, \
            CountingTarget(delay=0.05, host=hosts.gateway_address) as target:
        r1 = hosts.address("r1")
        server = hosts.run_in("r1", [
            redis_server_binary(), "--port", str(REDIS_PORT), "--bind", r1, "--save", "",
            "--appendonly", "no", "--protected-mode", "no", "--dir", str(directory)], {})
        env = {**hosts_env(hosts, target, directory),
               "INTEGRATION_REDIS_URL": f"redis://{r1}:{REDIS_PORT}/0"}
        wait_listening(r1, REDIS_PORT, server, "redis-server in r1")
        url, stats, workers = start_services(hosts, env, directory)
        store = redis.Redis(host=r1, port=REDIS_PORT, socket_timeout=5)
        token = issue_token(TEST_SECRET, "tester", ["admin"], 600)
        try:
            yield Cluster(hosts, url, stats, target, store, token, workers, env)
        finally:
            store.close()


def submitted(cluster: Cluster) -> int:
    """How many action messages the store ever recorded."""
    return int(cast(int, cluster.store.zcard("integration:idx:type:action")))


def wait_succeeded(cluster: Cluster, message_ids: list[str], timeout: float) -> None:
    pending = set(message_ids)

    def done() -> bool:
        for message_id in list(pending):
            status, record = fetch(f"{cluster.url}/api/v1/messages/{message_id}", cluster.token)
            if status == 200 and record["status"] == "succeeded":
                pending.discard(message_id)
            elif status == 200:
                assert record["status"] not in ("dead", "held"), record
        return not pending

    wait_for(done, timeout=timeout, interval=0.2, message=f"{len(pending)} messages succeeded")


def in_hand(cluster: Cluster, gateway: str) -> bool:
    """Whether HAProxy has a request open at ``gateway`` now."""
    return int(haproxy.server_stats(cluster.stats)[gateway]["scur"] or 0) > 0


def test_a_gateway_host_cut_mid_burst_loses_and_doubles_nothing(cluster: Cluster) -> None:
    """At least twice: gw1's link goes down in the middle of a burst; HAProxy sends
    everything to gw2, clients retrying with their key get one message each, each with one
    effect; once the link is back, HAProxy's health check puts gw1 back in service with no
    one's help. A round or two more when no request was in flight at gw1 at the cut (a
    request can finish between HAProxy's count and the cut), so that some client resent
    one."""
    retried = 0
    for round_ in range(4):
        if round_ >= 2 and retried:
            break
        before = submitted(cluster)
        burst = RetryingBurst(cluster, count=40, source=f"gateway-cut-{round_}")
        burst.start()
        wait_for(lambda b=burst: len(b.taken) >= 8, message="the burst under way")  # type: ignore[misc]
        # Cut while gw1 has a request in hand, so a client has to resend one.
        wait_for(lambda: in_hand(cluster, "gw1"), timeout=5, interval=0.001,
                 message="a request at gw1")
        cluster.hosts.cut("gw1")
        wait_for(lambda: haproxy.status(cluster.stats, "gw1").startswith("DOWN"), timeout=5,
                 message="HAProxy takes gw1 out")
        while_out = haproxy.sessions(cluster.stats, "gw1")
        assert burst.join(60), "every client finished"
        retried += burst.retried()
        assert not burst.refused, burst.refused
        assert haproxy.sessions(cluster.stats, "gw1") == while_out, "all to gw2 while gw1 is out"
        ids = [taken.message_id for taken in burst.taken.values()]
        assert len(ids) == len(set(ids)) == burst.count, "one message per key"
        wait_succeeded(cluster, ids, timeout=fast_bound() + 10)
        assert submitted(cluster) - before == burst.count, "no retried key made a second message"
        assert len(cluster.target.effects) == submitted(cluster), "one effect per message"
        assert max(cluster.target.calls.values()) == 1

        cluster.hosts.heal("gw1")
        wait_for(lambda: haproxy.status(cluster.stats, "gw1") == "UP", timeout=10,
                 message="HAProxy puts gw1 back")
        served = haproxy.sessions(cluster.stats, "gw1")
        for _ in range(4):
            assert fetch(f"{cluster.url}/api/v1/types", cluster.token)[0] == 200
        assert haproxy.sessions(cluster.stats, "gw1") > served, "gw1 serves again"
    assert retried, "some request was in flight at gw1 when its link went down"


def test_a_gateway_cut_off_from_redis_is_taken_out_until_it_reaches_it_again(
        cluster: Cluster) -> None:
    """gw1 loses Redis but not its clients (a partition): its /readyz fails, so HAProxy sends
    it nothing and every submission succeeds through gw2; once it reaches Redis again,
    HAProxy puts it back."""
    cluster.hosts.partition("gw1", ["r1"])
    try:
        wait_for(lambda: haproxy.status(cluster.stats, "gw1").startswith("DOWN"), timeout=10,
                 message="HAProxy takes gw1 out")
        while_out = haproxy.sessions(cluster.stats, "gw1")
        burst = RetryingBurst(cluster, count=12, source="gateway-partition", clients=2)
        burst.start()
        assert burst.join(60), "every client finished"
        assert not burst.refused, burst.refused
        assert haproxy.sessions(cluster.stats, "gw1") == while_out, "nothing sent to gw1"
        wait_succeeded(cluster, [t.message_id for t in burst.taken.values()], timeout=20)
    finally:
        cluster.hosts.mend("gw1")
    wait_for(lambda: haproxy.status(cluster.stats, "gw1") == "UP", timeout=15,
             message="HAProxy puts gw1 back")


def held_by(cluster: Cluster, worker: str) -> set[str]:
    """The message ids the worker in host ``worker`` says it holds (its live heartbeat)."""
    pid = cluster.workers[worker].pid
    return {str(message_id) for instance, beat in Heartbeats(cluster.store, "integration")
            .live().items() if instance.split(":")[1] == str(pid) for message_id in beat["held"]}


def test_a_worker_host_cut_mid_call_finishes_its_messages_on_the_other(
        cluster: Cluster) -> None:
    """w1's link goes down while it holds messages, calls in flight: the reconciler on w2
    sends them again and they succeed within the recovery bound, each effect performed once
    (the downstream sees the same key again); once the link is back, w1 beats again, and what
    it reports late about those messages changes nothing (fenced)."""
    cluster.target.delay = 1.0
    try:
        ids = []
        for index in range(8):
            body = action(index, "worker-cut")
            body["data"]["action"] = f"worker-cut-{index}"
            status, answer = fetch(f"{cluster.url}/api/v1/messages", cluster.token, body,
                                   {"Idempotency-Key": uuid.uuid4().hex})
            assert status == 202, answer
            ids.append(str(answer["id"]))
        held = wait_for(lambda: held_by(cluster, "w1") & set(ids), timeout=10,
                        message="w1 holding messages of the burst")
        cluster.hosts.cut("w1")
        cut = time.monotonic()
        wait_succeeded(cluster, ids, timeout=fast_bound() + 8 * cluster.target.delay + 10)
        took = time.monotonic() - cut
        assert took < fast_bound() + 8 * cluster.target.delay + 5, took
        effects = {key.split(":")[0] for key in cluster.target.effects}
        assert set(ids) <= effects, "every message performed"
        for message_id in held:
            status, record = fetch(f"{cluster.url}/api/v1/messages/{message_id}",
                                   cluster.token)
            assert record["attempts"] >= 2 or any(
                h["status"] == "reconciled" for h in record["history"]), record
    finally:
        cluster.hosts.heal("w1")
        cluster.target.delay = 0.05
    # Whatever w1 wrote before the cut goes; a beat of w1 seen now was written since.
    beats = Heartbeats(cluster.store, "integration")
    for instance in beats.live():
        if instance.split(":")[1] == str(cluster.workers["w1"].pid):
            beats.leave(instance)
    wait_for(lambda: beating(cluster, "w1"), timeout=20, message="w1 beating again")
    # What w1 still had to say about the messages it held comes late and changes nothing:
    # each stays succeeded with one finish (a late outcome is fenced or finds it final).
    time.sleep(2)
    for message_id in held:
        status, record = fetch(f"{cluster.url}/api/v1/messages/{message_id}", cluster.token)
        finishes = [h for h in record["history"] if h["status"] == "succeeded"]
        assert record["status"] == "succeeded" and len(finishes) == 1, record
    # One key per message (the take-over kept the generation), so one effect per message.
    keys = [key for key in cluster.target.effects if key.split(":")[0] in held]
    assert len(keys) == len({key.split(":")[0] for key in keys}), keys


def beating(cluster: Cluster, worker: str) -> bool:
    """Whether the worker in host ``worker`` has a live heartbeat (and is running)."""
    process = cluster.workers[worker]
    assert process.poll() is None, cluster.hosts.log(f"{worker}.log")[-3000:]
    return any(instance.split(":")[1] == str(process.pid)
               for instance in Heartbeats(cluster.store, "integration").live())


@pytest.fixture(scope="module")
def sentinel_cluster(tmp_path_factory: pytest.TempPathFactory,
                     test_environment: dict[str, str],
                     stale_hosts_removed: None) -> Iterator[Cluster]:
    """Redis and a sentinel in each of r1 (the master), r2 and r3; gateways (with the replica
    wait on) and workers that know only the sentinels; HAProxy and the counting target as in
    ``cluster``. ``Cluster.store`` follows the master."""
    directory = tmp_path_factory.mktemp("sentinel-hosts")
    with Hosts([*GATEWAYS, *WORKERS, *REDIS_HOSTS], directory) as hosts, \
            CountingTarget(delay=0.05, host=hosts.gateway_address) as target:
        r1 = hosts.address("r1")
        for name in REDIS_HOSTS:
            start_redis(hosts, name, directory, None if name == "r1" else r1)
        for name in REDIS_HOSTS:
            start_sentinel(hosts, name, directory, r1)
        env = {**hosts_env(hosts, target, directory),
               # The URL names a port nothing listens on: whatever ignored the sentinels fails.
               "INTEGRATION_REDIS_URL": NO_REDIS,
               "INTEGRATION_REDIS_SENTINELS": ",".join(
                   f"{hosts.address(name)}:{SENTINEL_PORT}" for name in REDIS_HOSTS),
               "INTEGRATION_REDIS_SENTINEL_MASTER": MASTER_NAME,
               "INTEGRATION_REDIS_REPLICA_WAIT": "1",
               "INTEGRATION_REDIS_REPLICA_WAIT_TIMEOUT_MS": "500",
               "INTEGRATION_PUBLISH_TIMEOUT_SECONDS": "1",
               "INTEGRATION_REDIS_HEALTH_CHECK_INTERVAL_SECONDS": "1"}
        url, stats, workers = start_services(hosts, env, directory)
        wait_for(lambda: sentinels_ready(hosts), timeout=20,
                 message="the sentinels know each other and both replicas")
        sentinel = redis.sentinel.Sentinel(
            [(hosts.address(name), SENTINEL_PORT) for name in REDIS_HOSTS],
            socket_timeout=0.5, socket_connect_timeout=0.5)
        store = sentinel.master_for(MASTER_NAME, socket_timeout=2, socket_connect_timeout=1)
        token = issue_token(TEST_SECRET, "tester", ["admin"], 600)
        try:
            yield Cluster(hosts, url, stats, target, store, token, workers, env)
        finally:
            store.close()


class RestartingWorkers:
    """Starts a worker of the cluster again when it exits, as a supervisor would (Celery may
    exit on a lost broker connection, celery #9250)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster, self.restarts = cluster, 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopped.wait(0.2):
            for name, process in list(self.cluster.workers.items()):
                if process.poll() is not None:
                    self.restarts += 1
                    self.cluster.workers[name] = start_worker(self.cluster.hosts, name,
                                                              self.cluster.env)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)


def in_doubt(answer: Answer) -> bool:
    """A 503 for a submission that may have been taken: enqueued, or not known to be."""
    return answer.status == 503 and (answer.body.get("enqueued") in ("yes", "unknown")
                                     or answer.body.get("replicated") == "unknown")


def test_the_redis_master_host_cut_mid_burst_fails_over_and_loses_no_accepted_message(
        sentinel_cluster: Cluster) -> None:
    """r1's link (the master's) goes down in the middle of a burst: the sentinels in r2 and r3
    promote a replica; clients see 503s or no answer meanwhile, never a 202 that is lost:
    every key gets one message that succeeds, its effect performed once. Once the link is back,
    r1 rejoins as the new master's replica and the three sentinels agree, with no one's help."""
    cluster, hosts = sentinel_cluster, sentinel_cluster.hosts
    r1 = hosts.address("r1")
    assert sentinels_master(hosts) == r1
    supervisor = RestartingWorkers(cluster)
    burst = RetryingBurst(cluster, count=40, source="master-cut")
    try:
        burst.start()
        wait_for(lambda: len(burst.taken) >= 10, message="the burst under way")
        hosts.cut("r1")
        cut = time.monotonic()
        new = wait_for(lambda: (m := sentinels_master(hosts, ("r2", "r3"))) != r1 and m,
                       timeout=20, message="the sentinels in r2 and r3 promote a replica")
        named = time.monotonic() - cut
        wait_for(lambda: any(a.status == 202 and a.sent > cut for a in list(burst.ledger)),
                 timeout=20, message="a 202 after the failover")
    finally:
        # Healed while the burst goes on: r1 rejoins as the rest of it is taken.
        hosts.heal("r1")
        healed = time.monotonic()
    try:
        assert burst.join(60), "every client finished"
        assert not burst.refused, burst.refused
        seen = Counter(a.status for a in burst.ledger if a.sent > cut and a.status != 202)
        assert set(seen) <= {0, 409, 502, 503, 504}, seen
        ids = [taken.message_id for taken in burst.taken.values()]
        assert len(ids) == len(set(ids)) == burst.count, "one message per key"
        wait_succeeded(cluster, ids, timeout=fast_bound() + 20)
    finally:
        supervisor.stop()
    effects = Counter(key.split(":")[0] for key in cluster.target.effects)
    assert all(effects[message_id] == 1 for message_id in ids), "one effect per 202"

    failover = min(a.answered for a in burst.ledger if a.status == 202 and a.sent > cut) - cut
    doubts = [a for a in burst.ledger if in_doubt(a)]
    kept = sum(1 for a in doubts if burst.taken[a.key].message_id == a.body.get("id"))
    lost_performed = sum(1 for a in doubts if burst.taken[a.key].message_id != a.body.get("id")
                         and effects[str(a.body.get("id"))])
    print(f"\nmaster cut: sentinels named {new} after {named:.1f} s, first 202 after "
          f"{failover:.1f} s; meanwhile {seen[503]} 503s, {seen[0]} without an answer, "
          f"others {dict(seen - Counter({503: seen[503], 0: seen[0]}))}; {len(doubts)} 503s in "
          f"doubt (enqueued yes/unknown), {kept} of them the message the key finally got, "
          f"{len(doubts) - kept} taken again as a new message (the first gone with r1, "
          f"{lost_performed} of those performed); {burst.retried()} keys retried, "
          f"{supervisor.restarts} worker restarts")

    wait_for(lambda: replicating(hosts, "r1", new), timeout=20,
             message="r1 a replica of the new master")
    wait_for(lambda: sentinels_master(hosts) == new, timeout=20,
             message="the three sentinels agree on the new master")
    rejoined = time.monotonic() - healed
    status, answer = fetch(f"{cluster.url}/api/v1/messages", cluster.token,
                           action(0, "after-heal"), {"Idempotency-Key": uuid.uuid4().hex})
    assert status == 202, answer
    print(f"r1 rejoined as a replica {rejoined:.1f} s after its link came back")
