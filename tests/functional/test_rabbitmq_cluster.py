"""A three-node RabbitMQ cluster on hosts of their own (``rq1``-``rq3``, network namespaces as
in test_hosts.py), started and joined by ``deploy/rabbitmq/cluster.sh``, with quorum queues.
Gateway (in this process) and workers know all three nodes; Redis, the workers and the
counting downstream stay in the root namespace and are never cut.

In the middle of a burst of effectful messages a node's link is cut, first a follower's of
the ``action`` queue, then its leader's: every 202 reaches ``succeeded`` with one effect,
effects without a 202 come only from 503s that said the message may have been enqueued, and
once the link is back the node rejoins and the queue has its three members again.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from integration.app import build_submitter
from integration.gateway import create_app
from integration.ops.embedded_redis import EmbeddedRedis
from integration.security.tokens import issue_token
from integration.settings import Settings
from tests.conftest import TEST_SECRET, wait_for
from tests.functional.test_broker_faults import wait_all_succeeded
from tests.support import rabbitmq
from tests.support.burst import Burst, SupervisedWorker
from tests.support.netns import Hosts, clean_stale, require_hosts
from tests.support.rabbit_cluster import NODES, TICKTIME, RabbitCluster
from tests.support.recovery import FAST_RECOVERY, CountingTarget, action, fast_bound

QUEUE = "action"
SUBMISSION_LOGGER = "integration.broker.submission"
#: Workers give up a silent node's connection after two missed heartbeats.
HEARTBEAT = 3
#: 202s after the cut that each scenario waits for before it ends the burst.
AFTER_CUT = 20
#: The order in which the gateway tries the nodes (the workers' is ``NODES``).
GATEWAY_NODES = ("rq2", "rq3", "rq1")


@dataclass
class Setup:
    cluster: RabbitCluster
    target: CountingTarget
    store: redis.Redis
    client: Any  # the gateway's test client
    auth: dict[str, str]
    workers: list[SupervisedWorker]
    redis_url: str
    bursts: list[Burst] = field(default_factory=list)


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory,
           test_environment: dict[str, str]) -> Iterator[Setup]:
    """The cluster, a Redis of its own, two supervised workers consuming ``action`` and a
    gateway, all on quorum queues and a broker URL naming the three nodes."""
    require_hosts()
    if not rabbitmq.available():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must run the RabbitMQ cluster tests: rabbitmq-server is missing")
        pytest.skip("rabbitmq-server is not installed")
    clean_stale()
    directory = tmp_path_factory.mktemp("rabbit-cluster")
    with Hosts(NODES, directory) as hosts, CountingTarget(delay=0.05) as target, \
            EmbeddedRedis(directory / "redis", persistent=False) as server:
        cluster = RabbitCluster(hosts, directory).start()
        env = {**FAST_RECOVERY, "INTEGRATION_REDIS_URL": server.url,
               "INTEGRATION_BROKER_URL": cluster.url(),
               "INTEGRATION_AMQP_QUEUE_TYPE": "quorum",
               "INTEGRATION_AMQP_HEARTBEAT_SECONDS": str(HEARTBEAT),
               "INTEGRATION_PUBLISH_TIMEOUT_SECONDS": "1",
               "INTEGRATION_RULES_FILE": str(target.rules_file(directory))}
        for index in range(2):
            (directory / f"w{index}").mkdir()
        with ThreadPoolExecutor(2) as pool:  # each waits for its worker to be ready
            workers = list(pool.map(lambda index: SupervisedWorker(
                [QUEUE], directory / f"w{index}", env), range(2)))
        # Workers (started first) declare the queues on rq1, which leads them; the gateway
        # publishes through rq2, a follower's node.
        app = create_app(Settings(redis_url=server.url, jwt_secret=TEST_SECRET,
                                  broker_url=cluster.url(GATEWAY_NODES),
                                  amqp_queue_type="quorum", publish_timeout_seconds=3))
        token = issue_token(TEST_SECRET, "tester", ["admin"], 600)
        store = redis.Redis(port=server.port)
        try:
            yield Setup(cluster, target, store, app.test_client(),
                        {"Authorization": f"Bearer {token}"}, workers, server.url)
        finally:
            for worker in workers:
                worker.stop()
            store.close()


class Refusals(logging.Handler):
    """Why the gateway answered 503: the reasons its submitter logged."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reasons: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("broker unavailable"):
            self.reasons[message.rpartition(": ")[2][:60]] += 1

    def __enter__(self) -> Refusals:
        logging.getLogger(SUBMISSION_LOGGER).addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        logging.getLogger(SUBMISSION_LOGGER).removeHandler(self)


def cut_mid_burst(rabbit: Setup, name: str, source: str
                  ) -> tuple[Burst, float, Counter[str]]:
    """A burst under way, host ``name``'s link cut, and the burst ended once the cluster
    saw the node go and ``AFTER_CUT`` requests sent after the cut were answered 202: the
    burst, when the link went down, and why the gateway refused what it refused."""
    burst = Burst(rabbit.client, rabbit.auth, count=None, pause=0.02, source=source,
                  make=action)
    rabbit.bursts.append(burst)
    seen = rabbit.target.received
    with Refusals() as refusals:
        burst.start()
        try:
            wait_for(lambda: rabbit.target.received >= seen + 10, timeout=60,
                     message="calls in flight")
            rabbit.cluster.hosts.cut(name)
            cut = time.monotonic()
            others = [n for n in NODES if n != name]
            wait_for(lambda: rabbit.cluster.running(others[0]) == set(others),
                     timeout=TICKTIME * 4, interval=0.5, message=f"the others see {name} gone")
            wait_for(lambda: sum(a.status == 202 and a.started > cut
                                 for a in list(burst.answers.values())) >= AFTER_CUT,
                     timeout=60, message="accepted after the cut")
        finally:
            burst.stop()
    return burst, cut, refusals.reasons


def check_ledger(rabbit: Setup, burst: Burst) -> float:
    """Every 202 of ``burst`` succeeded (seconds it took after the burst), and each effect
    so far was of a 202, once, or of a 503 that left the message in doubt."""
    accepted = burst.accepted()
    assert set(burst.outcomes.values()) <= {202, 503}, burst.outcomes
    settle = fast_bound() + len(accepted) * rabbit.target.delay + 30
    took = wait_all_succeeded(rabbit.store, accepted, timeout=settle)
    effects = rabbit.target.effects
    every_202 = {f"{i}:1" for b in rabbit.bursts for i in b.accepted()}
    doubtful = {f"{i}:1" for b in rabbit.bursts for i in b.in_doubt()}
    assert {f"{i}:1" for i in accepted} <= effects
    assert effects - every_202 <= doubtful, f"performed without a 202: {effects - every_202}"
    assert max(rabbit.target.calls.values()) == 1 or all(
        key in doubtful for key, calls in rabbit.target.calls.items() if calls > 1)
    assert rabbit.target.unkeyed == 0
    return took


def failover(burst: Burst, cut: float) -> float:
    """Seconds from the cut to the first 202 of a request sent after it."""
    return min(a.ended for a in list(burst.answers.values())
               if a.status == 202 and a.started > cut) - cut


def report(what: str, burst: Burst, cut: float, reasons: Counter[str], took: float,
           rejoined: float, how: str, rabbit: Setup) -> str:
    """What the cut cost, for docs/high-availability.md's table."""
    answers = list(burst.answers.values())
    refused = sum(a.status == 503 for a in answers)
    restarts = sum(w.restarts for w in rabbit.workers)
    performed = sum(f"{i}:1" in rabbit.target.effects for i in burst.in_doubt())
    doubts = len(burst.in_doubt())
    return (f"\n{what}: first 202 {failover(burst, cut):.1f} s after the cut; "
            f"{len(burst.accepted())} accepted, {refused} answered 503 ({doubts} in doubt, "
            f"{performed} of those performed all the same; the gateway logged "
            f"{dict(reasons)}); all succeeded {took:.1f} s after the burst; {restarts} worker "
            f"restarts so far; the node {how}, with every member, {rejoined:.1f} s after its "
            f"link came back")


def assert_depths_read_past(rabbit: Setup, cut: str) -> None:
    """Queue depths (the reconciler's reading, the gateway's back-pressure) through a URL
    whose first node is the cut one: read from the next, and once connected, at once."""
    url = rabbit.cluster.url([cut, *(name for name in NODES if name != cut)])
    publisher = build_submitter(Settings(
        redis_url=rabbit.redis_url, jwt_secret=TEST_SECRET, broker_url=url,
        amqp_queue_type="quorum", publish_timeout_seconds=1), origin="depths").publisher
    assert QUEUE in publisher.queue_depths([QUEUE])
    started = time.monotonic()
    assert QUEUE in publisher.queue_depths([QUEUE])
    assert time.monotonic() - started < 0.5, "the pooled connection stays on a live node"


def test_a_follower_node_cut_mid_burst_loses_and_doubles_nothing(rabbit: Setup) -> None:
    """The node holding a follower of the ``action`` queue and the gateway's connection is
    cut off: the two others keep a majority, the gateway reconnects to the next node of its
    URL, answering 503 meanwhile; every 202 succeeds once, and once the link is back the
    node rejoins and the queue has three members again."""
    leader = rabbit.cluster.leader(QUEUE)
    assert leader is not None
    follower = next(n for n in GATEWAY_NODES if n != leader)
    burst, cut, reasons = cut_mid_burst(rabbit, follower, "follower-cut")
    took = check_ledger(rabbit, burst)
    # Reconnected, the gateway does not wait for the cluster to count the node down (it
    # declares its queue, not the queue's binding, which would wait).
    assert failover(burst, cut) < TICKTIME, failover(burst, cut)
    rejoined, how = rabbit.cluster.heal(follower, QUEUE)
    print(report(f"follower {follower} cut", burst, cut, reasons, took, rejoined, how,
                 rabbit))


def test_the_leader_node_cut_mid_burst_fails_over_and_loses_no_accepted_message(
        rabbit: Setup) -> None:
    """The node leading the ``action`` queue (and holding the workers' connections) is cut
    off: the others elect a new leader and the workers reconnect to them; meanwhile the
    gateway, on a node that survives, answers 503, never a 202 that is lost; every 202
    succeeds once and the node rejoins as a follower."""
    leader = rabbit.cluster.leader(QUEUE)
    assert leader is not None
    burst, cut, reasons = cut_mid_burst(rabbit, leader, "leader-cut")
    after = rabbit.cluster.leader(QUEUE, asked=next(n for n in NODES if n != leader))
    assert after not in (None, leader), after
    assert_depths_read_past(rabbit, leader)
    took = check_ledger(rabbit, burst)
    rejoined, how = rabbit.cluster.heal(leader, QUEUE)
    print(report(f"leader {leader} cut", burst, cut, reasons, took, rejoined, how,
                 rabbit))
