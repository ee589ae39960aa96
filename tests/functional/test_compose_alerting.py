"""docker-compose.yml's alerting and its limits: Alertmanager and the Redis exporter wired to
Prometheus, Redis bounded by maxmemory, every service bounded in CPU and memory."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.functional.test_compose import (
    COMPOSE,
    DEPLOY,
    compose_config,
    host_path,
    one_shot,
    option_value,
    published,
)

ALERTMANAGER_PORT, EXPORTER_PORT = 9093, 9121
SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]?)b?$", re.IGNORECASE)


def size_in_bytes(value: Any) -> float:
    """A docker-compose or Redis memory size (``512m``, ``1gb``, or bytes) in bytes."""
    found = SIZE.match(str(value).strip())
    assert found, f"not a size: {value!r}"
    return float(found[1]) * 1024 ** " kmg".index(found[2].lower() or " ")


def prometheus_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    return config


def scrape_targets(job_name: str) -> list[str]:
    [job] = [j for j in prometheus_config()["scrape_configs"] if j["job_name"] == job_name]
    return [target for config in job["static_configs"] for target in config["targets"]]


@pytest.mark.parametrize("which", ["resolved", "on_rabbitmq", "highly_available"])
def test_every_service_is_limited_in_cpu_and_memory(which: str,
                                                    request: pytest.FixtureRequest) -> None:
    """Each service has a CPU and a memory limit, in the form docker-compose applies."""
    for name, service in request.getfixturevalue(which)["services"].items():
        assert float(service.get("cpus", 0)) > 0, f"{name} has no CPU limit"
        assert size_in_bytes(service.get("mem_limit", 0)) > 0, f"{name} has no memory limit"


def test_redis_has_a_memory_limit_below_its_container_limit(resolved: dict[str, Any]) -> None:
    """noeviction needs a maxmemory to enforce; the container's limit leaves room above it."""
    redis = resolved["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    maxmemory = size_in_bytes(command[command.index("--maxmemory") + 1])
    assert maxmemory == 1024 ** 3, "REDIS_MAXMEMORY's default"
    assert size_in_bytes(redis["mem_limit"]) >= 1.25 * maxmemory


def test_workers_set_their_pool_size_with_their_limits(resolved: dict[str, Any]) -> None:
    """Celery's default pool is the host's core count, whatever the container's limit."""
    for name, service in resolved["services"].items():
        if (service.get("command") or [])[:4] == ["celery", "-A", "tasks", "worker"]:
            assert int(service["environment"]["INTEGRATION_WORKER_CONCURRENCY"]) >= 1, name


def test_alertmanager_runs_the_shipped_configuration(resolved: dict[str, Any]) -> None:
    """A pinned Alertmanager reads deploy/alertmanager.yml, finds its secret files in the
    mounted folder, answers its health check, and is published on loopback only."""
    service = resolved["services"]["alertmanager"]
    assert re.fullmatch(r"prom/alertmanager:v\d+\.\d+\.\d+", service["image"])
    config_path = option_value(service["command"], "--config.file")
    assert host_path(service, config_path) == DEPLOY / "alertmanager.yml"
    assert option_value(service["command"], "--web.listen-address") == f":{ALERTMANAGER_PORT}"
    assert published(service)[ALERTMANAGER_PORT].startswith("127.0.0.1:")
    assert f":{ALERTMANAGER_PORT}/-/ready" in " ".join(service["healthcheck"]["test"])
    files = re.findall(r"_file: (\S+)", (DEPLOY / "alertmanager.yml").read_text())
    assert files
    for path in files:
        assert host_path(service, path).parent == DEPLOY / "alertmanager-secrets", path
    assert (DEPLOY / "alertmanager-secrets" / ".gitignore").read_text().splitlines()[-2:] == \
        ["*", "!.gitignore"], "its secrets are never committed"


def test_prometheus_sends_alerts_to_alertmanager_and_scrapes_it(
        resolved: dict[str, Any]) -> None:
    """The alerting block and the scrape jobs name the compose services and their ports."""
    services = resolved["services"]
    [manager] = prometheus_config()["alerting"]["alertmanagers"]
    targets = [t for config in manager["static_configs"] for t in config["targets"]]
    assert targets == [f"alertmanager:{ALERTMANAGER_PORT}"] == scrape_targets("alertmanager")
    assert "alertmanager" in services
    assert scrape_targets("redis") == [f"redis-exporter:{EXPORTER_PORT}"]
    assert str(EXPORTER_PORT) in {str(p) for p in services["redis-exporter"]["expose"]}
    assert "ports" not in services["redis-exporter"], "the exporter stays on the network"


def test_the_exporter_logs_in_as_its_own_user_that_reads_no_key(
        resolved: dict[str, Any]) -> None:
    """A pinned redis_exporter uses the `exporter` ACL user, whose password secrets-check
    judges and which may run no command on keys."""
    services = resolved["services"]
    exporter = services["redis-exporter"]
    assert re.fullmatch(r"oliver006/redis_exporter:v\d+\.\d+\.\d+-alpine", exporter["image"])
    environment = exporter["environment"]
    assert environment["REDIS_USER"] == "exporter"
    password = environment["REDIS_PASSWORD"]
    assert password == services["redis"]["environment"]["REDIS_EXPORTER_PASSWORD"]
    assert services["secrets-check"]["environment"]["REDIS_EXPORTER_PASSWORD"] == password
    script = services["redis"]["command"][2]
    rules = re.search(r"exporter_rules='([^']*)'", script)
    assert rules and rules[1].startswith("-@all ") and "~" not in rules[1]
    assert 'echo "user exporter on #' in script
    assert exporter["depends_on"]["redis"]["condition"] == "service_healthy"
    assert exporter.get("healthcheck", {}).get("test")
    assert not one_shot(exporter)


def test_compose_refuses_to_start_without_the_exporter_password(tmp_path: Path) -> None:
    """.env without REDIS_EXPORTER_PASSWORD stops docker-compose naming it."""
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(line for line in (ROOT / ".env.example").read_text()
                                  .splitlines() if not line.startswith("REDIS_EXPORTER")))
    result = compose_config(env_file, COMPOSE)
    assert result.returncode != 0
    assert "REDIS_EXPORTER_PASSWORD" in result.stderr
