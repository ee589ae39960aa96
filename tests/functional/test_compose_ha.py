"""docker-compose.ha.yml and deploy/haproxy/haproxy.cfg: two gateways behind HAProxy checking
``/readyz``, workers on two hosts, one Redis master with two replicas and three sentinels,
valid for docker-compose and for HAProxy."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from integration.ops.cli import main as cli
from tests.functional.test_compose import (
    DEPLOY,
    HA,
    ROOT,
    compose_config,
    declared_queues,
    host_path,
    option_value,
    published,
    workers,
)
from tests.functional.test_compose_alerting import size_in_bytes

HAPROXY_CONFIG = DEPLOY / "haproxy" / "haproxy.cfg"
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
