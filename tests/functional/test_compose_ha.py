"""docker-compose.ha.yml and deploy/haproxy/haproxy.cfg: two gateways behind HAProxy checking
``/readyz``, workers on two hosts, one Redis master with two replicas and three sentinels,
valid for docker-compose and for HAProxy; docker-compose.rabbitmq-ha.yml on top: a RabbitMQ
node on each host, clustered, that every component knows."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from integration.ops.cli import main as cli
from integration.settings import Settings
from tests.functional.test_compose import (
    DEPLOY,
    HA,
    ROOT,
    compose_config,
    declared_queues,
    host_path,
    option_value,
    published,
    resolve,
    workers,
)
from tests.functional.test_compose_alerting import size_in_bytes

HAPROXY_CONFIG = DEPLOY / "haproxy" / "haproxy.cfg"
RABBITMQ_HA = ROOT / "docker-compose.rabbitmq-ha.yml"
RABBITMQ_NODES = ("rabbitmq-1", "rabbitmq-2", "rabbitmq-3")
GATEWAYS, WORKERS = ("gateway-a", "gateway-b"), ("worker-a", "worker-b")
REDIS_NODES, SENTINELS = ("redis-1", "redis-2", "redis-3"), ("sentinel-a", "sentinel-b",
                                                             "sentinel-c")


def host(service: dict[str, Any]) -> str:
    """The host a service belongs on, by its label and its swarm placement (the same)."""
    label = service["labels"]["integration.host"]
    [constraint] = service["deploy"]["placement"]["constraints"]
    assert constraint == f"node.labels.integration-host == {label}"
    return str(label)


def haproxy_sections() -> dict[str, list[str]]:
    """The lines of each section of haproxy.cfg (``backend gateways``: its lines)."""
    sections: dict[str, list[str]] = {}
    current = ""
    for line in HAPROXY_CONFIG.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            current = line.strip()
            sections[current] = []
        else:
            sections[current].append(line.strip())
    return sections


def test_ha_refuses_to_start_without_its_redis_passwords(tmp_path: Path) -> None:
    """Without the replicas' and sentinels' passwords docker-compose stops and names them."""
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(
        line for line in (ROOT / ".env.example").read_text().splitlines()
        if not line.startswith(("REDIS_REPLICA_PASSWORD", "REDIS_SENTINEL_PASSWORD"))))
    result = compose_config(env_file, HA)
    assert result.returncode != 0
    assert re.search(r"REDIS_(REPLICA|SENTINEL)_PASSWORD", result.stderr)


def test_no_host_holds_both_of_a_pair_or_most_sentinels(
        highly_available: dict[str, Any]) -> None:
    """Gateways and workers each on two hosts, the three Redis nodes and the three sentinels
    on three: losing one host leaves a gateway, a worker, a replica and a sentinel majority."""
    services = highly_available["services"]
    assert {host(services[name]) for name in GATEWAYS} == {"a", "b"}
    assert {host(services[name]) for name in WORKERS} == {"a", "b"}
    assert len({host(services[name]) for name in REDIS_NODES}) == 3
    assert len({host(services[name]) for name in SENTINELS}) == 3
    assert host(services["haproxy"]) not in {host(services[name]) for name in GATEWAYS}


def test_haproxy_balances_the_gateways_by_their_readiness(
        highly_available: dict[str, Any]) -> None:
    """HAProxy reads deploy/haproxy/haproxy.cfg, listens on the published port and sends to
    exactly the two gateways, checking ``GET /readyz`` on the port they serve."""
    services = highly_available["services"]
    balancer = services["haproxy"]
    assert host_path(balancer, "/usr/local/etc/haproxy/haproxy.cfg") == HAPROXY_CONFIG
    sections = haproxy_sections()
    [bind] = [line for line in sections["frontend api"] if line.startswith("bind ")]
    port = int(bind.rsplit(":", 1)[1])
    assert port in published(balancer)
    backend = sections["backend gateways"]
    assert "option httpchk" in backend
    assert "http-check send meth GET uri /readyz" in backend
    assert "http-check expect status 200" in backend
    servers = {words[1]: words[2:] for words in (line.split() for line in backend)
               if words[0] == "server"}
    assert set(servers) == set(GATEWAYS)
    for name, words in servers.items():
        assert "check" in words, name
        command = services[name]["command"]
        assert command[:2] == ["integration", "serve"]
        context = cli.commands["serve"].make_context("serve", command[2:])
        assert words[0] == f"{name}:{context.params['port']}"
        assert context.params["host"] == "0.0.0.0"
        assert services[name]["environment"]["INTEGRATION_PROXY_HOPS"] == "1"
        assert int(services[name]["environment"]["INTEGRATION_REDIS_REPLICA_WAIT"]) >= 1, \
            "a 202 survives a failover"
        assert "ports" not in services[name], "clients reach gateways through HAProxy only"


def test_haproxy_accepts_its_configuration() -> None:
    """``haproxy -c`` (Debian's HAProxy, as CI installs it) finds the file valid."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        pytest.skip("HAProxy is not installed (apt-get install haproxy)")
    result = subprocess.run([binary, "-c", "-f", str(HAPROXY_CONFIG)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_worker_host_consumes_every_queue(highly_available: dict[str, Any]) -> None:
    """Either worker host alone keeps every stage going."""
    found = workers(highly_available)
    assert set(found) == set(WORKERS)
    for name, service in found.items():
        assert set(option_value(service["command"], "-Q").split(",")) == declared_queues(), name
        assert service["restart"] == "unless-stopped"


def test_one_master_two_replicas_three_sentinels(highly_available: dict[str, Any]) -> None:
    """redis-1 is the master and redis-2 and -3 replicate it, each durable, never evicting and
    refusing writes no replica acknowledges; three sentinels monitor redis-1 with a quorum of
    two; the service's components log in as their own users and follow the sentinels."""
    services = highly_available["services"]
    for name in REDIS_NODES:
        command = services[name]["command"]
        assert command[command.index("--appendonly") + 1] == "yes", name
        assert command[command.index("--maxmemory-policy") + 1] == "noeviction", name
        maxmemory = size_in_bytes(command[command.index("--maxmemory") + 1])
        assert size_in_bytes(services[name]["mem_limit"]) >= 1.25 * maxmemory, name
        assert command[command.index("--min-replicas-to-write") + 1] == "1", name
        replica_of = command[command.index("--replicaof") + 1:][:2] \
            if "--replicaof" in command else None
        assert replica_of == (None if name == "redis-1" else ["redis-1", "6379"]), name
        assert "masterauth" in command[2], f"{name} can follow a new master"
        assert "ports" not in services[name]
    for name in SENTINELS:
        script = services[name]["command"][2]
        assert "sentinel monitor integration redis-1 6379 2" in script, name
        assert "exec redis-sentinel" in script
    for name in (*GATEWAYS, *WORKERS, "beat-a", "beat-b"):
        environment = services[name]["environment"]
        url = urlsplit(environment["INTEGRATION_REDIS_URL"])
        assert url.hostname == "redis-1" and url.password, name
        assert url.username == name.split("-")[0], name
        # ... and follow whichever node the sentinels name.
        assert environment["INTEGRATION_REDIS_SENTINELS"] == \
            ",".join(f"{s}:26379" for s in SENTINELS), name
        assert environment["INTEGRATION_REDIS_SENTINEL_MASTER"] == "integration", name


def test_the_ha_stack_starts_only_after_its_secrets_pass(
        highly_available: dict[str, Any]) -> None:
    """Every Redis node, so every component, waits for `integration check --only secrets`."""
    services = highly_available["services"]
    command = services["secrets-check"]["command"]
    assert command[:2] == ["integration", "check"]
    context = cli.commands["check"].make_context("check", command[2:])
    assert context.params["only"] == ("secrets",)
    assert services["secrets-check"]["environment"]["INTEGRATION_ENV"] == "production"
    for name in REDIS_NODES:
        condition = services[name]["depends_on"]["secrets-check"]["condition"]
        assert condition == "service_completed_successfully", name


@pytest.fixture(scope="module")
def rabbitmq_ha(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """docker-compose.ha.yml with docker-compose.rabbitmq-ha.yml, as docker-compose resolves
    them with .env.example as the .env."""
    return resolve(tmp_path_factory, HA, RABBITMQ_HA)


def test_rabbitmq_ha_refuses_to_start_without_its_cookie(tmp_path: Path) -> None:
    """Without the nodes' shared Erlang cookie docker-compose stops and names it."""
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(
        line for line in (ROOT / ".env.example").read_text().splitlines()
        if not line.startswith("RABBITMQ_CLUSTER_COOKIE")))
    result = compose_config(env_file, HA, RABBITMQ_HA)
    assert result.returncode != 0
    assert "RABBITMQ_CLUSTER_COOKIE" in result.stderr


def test_a_rabbitmq_node_on_each_host_clustered_and_pausing_a_minority(
        rabbitmq_ha: dict[str, Any]) -> None:
    """Three nodes on three hosts, each named by its fixed host name, sharing the cookie,
    finding each other by those names and pausing the side of a partition with fewer than
    two of them; the second and third start once the first runs."""
    services = rabbitmq_ha["services"]
    assert {host(services[name]) for name in RABBITMQ_NODES} == {"a", "b", "c"}
    config = DEPLOY / "rabbitmq" / "compose-cluster.conf"
    lines = {line.split(" = ")[0]: line.split(" = ")[1]
             for line in config.read_text().splitlines() if " = " in line}
    assert lines["cluster_partition_handling"] == "pause_minority"
    assert lines["cluster_formation.peer_discovery_backend"] == "classic_config"
    peers = {v for k, v in lines.items() if k.startswith("cluster_formation.classic_config")}
    assert peers == {f"rabbit@{name}" for name in RABBITMQ_NODES}
    for name in RABBITMQ_NODES:
        node = services[name]
        assert node["hostname"] == name
        assert host_path(node, "/etc/rabbitmq/conf.d/20-cluster.conf") == config
        assert f"{name}-data:/var/lib/rabbitmq:rw" in node["volumes"]
        assert node["environment"]["RABBITMQ_CLUSTER_COOKIE"]
        assert "RABBITMQ_CLUSTER_COOKIE" in node["command"][2]
        assert "rabbitmq-diagnostics" in node["healthcheck"]["test"]
    for name in RABBITMQ_NODES[1:]:
        assert services[name]["depends_on"]["rabbitmq-1"]["condition"] == "service_healthy"


def test_every_component_knows_the_three_rabbitmq_nodes_and_uses_quorum_queues(
        rabbitmq_ha: dict[str, Any]) -> None:
    """Gateways, workers, beats and the secrets check get a broker URL naming the three nodes
    (kombu's failover syntax) and quorum queues; the long-running ones wait for the nodes."""
    services = rabbitmq_ha["services"]
    for name in (*GATEWAYS, *WORKERS, "beat-a", "beat-b", "secrets-check"):
        environment = services[name]["environment"]
        url = environment["INTEGRATION_BROKER_URL"]
        parts = [urlsplit(part) for part in url.split(";")]
        assert [p.hostname for p in parts] == list(RABBITMQ_NODES), name
        assert all(p.scheme == "amqp" and p.password and p.path == "/integration"
                   for p in parts), name
        assert environment["INTEGRATION_AMQP_QUEUE_TYPE"] == "quorum", name
        settings = Settings(jwt_secret="x" * 40, broker_url=url, amqp_queue_type="quorum")
        assert settings.quorum_queues, name
        assert settings.broker_connect_seconds == 3 * settings.publish_timeout_seconds
        if name != "secrets-check":
            for node in RABBITMQ_NODES:
                assert services[name]["depends_on"][node]["condition"] == "service_healthy"


def test_rabbitmq_ha_workers_consume_every_queue_and_the_dead_letters(
        rabbitmq_ha: dict[str, Any]) -> None:
    """With quorum queues a message past its delivery limit goes to the dead-letter queue:
    each worker host consumes it beside every other queue, so it is recorded dead."""
    for name in WORKERS:
        queues = set(option_value(rabbitmq_ha["services"][name]["command"], "-Q").split(","))
        assert queues == declared_queues() | {"integration.dead-letter"}, name
