"""docker-compose.yml: valid for docker-compose, and every command, port and variable real."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.builtin_types import BUILTIN_TYPES
from integration.cli import main as cli
from integration.registry import Registry
from integration.routing import DEFAULT_QUEUE
from integration.settings import Settings
from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def clean_env() -> dict[str, str]:
    """This process's environment without the test settings, so only the .env file counts."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("INTEGRATION_", "FLOWER_"))}


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The file as docker-compose resolves it, with .env.example as the .env."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    shutil.copy(ROOT / ".env.example", env_file)
    output = subprocess.run(
        [binary, "--project-directory", str(ROOT), "-f", str(COMPOSE),
         "--env-file", str(env_file), "config"],
        capture_output=True, text=True, check=True, timeout=60, env=clean_env(),
    ).stdout
    return yaml.safe_load(output)


def test_compose_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    """Without a .env the required secrets make docker-compose stop with a clear message."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    empty = tmp_path / ".env"
    empty.write_text("")
    result = subprocess.run([binary, "--project-directory", str(ROOT), "-f", str(COMPOSE),
                             "--env-file", str(empty), "config"],
                            capture_output=True, text=True, timeout=60, env=clean_env())
    assert result.returncode != 0
    assert "INTEGRATION_JWT_SECRET" in result.stderr


def test_every_variable_is_a_setting(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        for variable in service.get("environment", {}):
            if variable.startswith("INTEGRATION_"):
                field = variable.removeprefix("INTEGRATION_").lower()
                assert field in Settings.model_fields, f"{name}: {variable} is not read"


def test_commands_are_real_entry_points(resolved: dict[str, Any]) -> None:
    """Gateway runs `integration serve` on the published port; workers name real queues."""
    services = resolved["services"]
    gateway = services["gateway"]["command"]
    assert gateway[:2] == ["integration", "serve"]
    assert "serve" in cli.commands
    port = gateway[gateway.index("--port") + 1]
    assert any(str(p.get("target", p)).endswith(port) for p in services["gateway"]["ports"])

    from integration.loop import STAGES
    from integration.webhooks import WEBHOOK_TYPE

    queues = set(Registry(BUILTIN_TYPES).queues()) | {DEFAULT_QUEUE, WEBHOOK_TYPE} | {
        f"consumer.loop-{stage}" for stage in STAGES}
    consumed: set[str] = set()
    for name, service in services.items():
        command = service.get("command") or []
        if command[:4] == ["celery", "-A", "tasks", "worker"]:
            named = command[command.index("-Q") + 1].split(",")
            assert set(named) <= queues, f"{name} consumes an unknown queue"
            consumed |= set(named)
    assert consumed == queues, "every queue has a worker"
    assert services["beat"]["command"][:4] == ["celery", "-A", "tasks", "beat"]


def test_redis_is_durable_and_never_evicts(resolved: dict[str, Any]) -> None:
    command = resolved["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_every_service_has_a_health_check_or_depends_on_one(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        assert "healthcheck" in service or name in ("beat", "flower"), name


def test_prometheus_scrapes_every_worker_service(resolved: dict[str, Any]) -> None:
    """deploy/prometheus.yml discovers every worker service of the compose file."""
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    [job] = [j for j in scrape["scrape_configs"] if j["job_name"] == "integration-workers"]
    named = {n for config in job["dns_sd_configs"] for n in config["names"]}
    workers = {name for name, service in resolved["services"].items()
               if (service.get("command") or [])[:4] == ["celery", "-A", "tasks", "worker"]}
    assert named == workers
