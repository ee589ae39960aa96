"""docker-compose.yml and its RabbitMQ override: valid for docker-compose, and every command,
port, variable and mounted file real."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from integration.loop.types import builtin_types
from integration.messages.registry import Registry
from integration.messages.routing import CELERY_QUEUE, DEFAULT_QUEUE
from integration.ops.cli import main as cli
from integration.settings import Settings
from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
RABBITMQ = ROOT / "docker-compose.rabbitmq.yml"
HA = ROOT / "docker-compose.ha.yml"
DEPLOY = ROOT / "deploy"
WORKER = ["celery", "-A", "tasks", "worker"]
#: The port each service listens on inside its container.
GATEWAY_PORT, GATEWAY_METRICS_PORT = 8000, 9100
FLOWER_PORT, PROMETHEUS_PORT, GRAFANA_PORT = 5555, 9090, 3000


def docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    return binary


def clean_env() -> dict[str, str]:
    """This process's environment without the test settings, so only the .env file counts."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("INTEGRATION_", "FLOWER_", "GRAFANA_", "RABBITMQ_",
                                 "GATEWAY_PORT", "ADMIN_BIND_ADDRESS"))}


def compose_config(env_file: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    arguments = [item for f in files for item in ("-f", str(f))]
    return subprocess.run(
        [docker_compose(), "--project-directory", str(ROOT), *arguments,
         "--env-file", str(env_file), "config"],
        capture_output=True, text=True, timeout=60, env=clean_env())


def resolve(tmp_path_factory: pytest.TempPathFactory, *files: Path) -> dict[str, Any]:
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    shutil.copy(ROOT / ".env.example", env_file)
    result = compose_config(env_file, *files)
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = yaml.safe_load(result.stdout)
    return resolved


def app_services(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The long-running services that run the service's own images (they read INTEGRATION_*):
    the service's, and Flower's, built from it."""
    images = ("integration-bus:latest", "integration-bus-flower:latest")
    return {name: service for name, service in resolved["services"].items()
            if service.get("image") in images and not one_shot(service)}


def one_shot(service: dict[str, Any]) -> bool:
    """A service that runs once before the others (``secrets-check``), never restarted."""
    return str(service.get("restart")) in ("no", "False", "false")


def workers(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in resolved["services"].items()
            if (service.get("command") or [])[:4] == WORKER}


def published(service: dict[str, Any]) -> dict[int, str]:
    """Container port to host binding, whichever form docker-compose prints."""
    ports: dict[int, str] = {}
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports[int(port["target"])] = f"{port.get('host_ip', '')}:{port.get('published')}"
        else:
            *host, target = str(port).split("/")[0].split(":")
            ports[int(target)] = ":".join(host)
    return ports


def setting_value(service: dict[str, Any], variable: str) -> str:
    """The value a service's environment gives a setting, or the setting's default."""
    environment = service.get("environment", {})
    if variable in environment:
        return str(environment[variable])
    return str(Settings.model_fields[variable.removeprefix("INTEGRATION_").lower()].default)


def option_value(command: list[str], option: str) -> str:
    for index, word in enumerate(command):
        if word == option:
            return command[index + 1]
        if word.startswith(option + "="):
            return word.split("=", 1)[1]
    raise AssertionError(f"{option} missing from {command}")


def test_compose_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    """Without a .env the required secrets make docker-compose stop with a clear message."""
    empty = tmp_path / ".env"
    empty.write_text("")
    result = compose_config(empty, COMPOSE)
    assert result.returncode != 0
    assert "in .env" in result.stderr
    assert re.search(r"INTEGRATION_JWT_SECRET|FLOWER_BASIC_AUTH|GRAFANA_ADMIN_PASSWORD",
                     result.stderr)


def test_rabbitmq_override_refuses_to_start_without_its_password(tmp_path: Path) -> None:
    """The override names RABBITMQ_PASSWORD when .env lacks it."""
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(line for line in (ROOT / ".env.example").read_text()
                                  .splitlines() if not line.startswith("RABBITMQ_PASSWORD")))
    result = compose_config(env_file, COMPOSE, RABBITMQ)
    assert result.returncode != 0
    assert "RABBITMQ_PASSWORD" in result.stderr


def example_values() -> dict[str, str]:
    """The variables .env.example sets, and their placeholder values."""
    example = (ROOT / ".env.example").read_text()
    return dict(line.split("=", 1) for line in example.splitlines()  # type: ignore[misc]
                if line and not line.startswith("#"))


def test_env_file_is_never_committed() -> None:
    """.gitignore keeps .env out of the repository; .env.example holds placeholders only."""
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    values = example_values()
    assert values and all("replace" in value for value in values.values()), values


def test_every_placeholder_of_env_example_is_refused_in_production() -> None:
    """Each value of .env.example (Flower's: its password) is a placeholder that production
    refuses, so a copied .env.example never guards a deployment."""
    from integration.security.secrets import secret_weakness

    for variable, value in example_values().items():
        secret = value.partition(":")[2] if variable == "FLOWER_BASIC_AUTH" else value
        assert (secret_weakness(secret) or "").startswith("is a placeholder"), variable


def test_the_stack_starts_only_after_its_secrets_pass(resolved: dict[str, Any]) -> None:
    """secrets-check runs `integration check --only secrets` in production with every secret
    of .env; Redis (so every app service) and Grafana wait for it to succeed."""
    services = resolved["services"]
    check = services["secrets-check"]
    assert one_shot(check)
    command = check["command"]
    assert command[:2] == ["integration", "check"]
    context = cli.commands["check"].make_context("check", command[2:])
    assert context.params["only"] == ("secrets",) and context.params["offline"]
    environment = check["environment"]
    assert environment["INTEGRATION_ENV"] == "production"
    assert {"INTEGRATION_JWT_SECRET", "INTEGRATION_REDIS_URL", "FLOWER_BASIC_AUTH",
            "GRAFANA_ADMIN_PASSWORD"} <= set(environment)
    for name in ("redis", "grafana"):
        condition = services[name]["depends_on"]["secrets-check"]["condition"]
        assert condition == "service_completed_successfully", name


def test_each_component_logs_in_to_redis_as_its_own_user(resolved: dict[str, Any]) -> None:
    """Every app service's Redis URL names its component's ACL user and a password."""
    users = {}
    for name, service in app_services(resolved).items():
        url = urlsplit(service["environment"]["INTEGRATION_REDIS_URL"])
        assert url.hostname == "redis" and url.password, name
        users[name] = url.username
    assert users["gateway"] == "gateway" and users["beat"] == "beat"
    assert users["flower"] == "flower"
    assert {users[name] for name in workers(resolved)} == {"worker"}


@pytest.mark.parametrize("which", ["resolved", "on_rabbitmq", "highly_available"])
def test_every_variable_is_a_setting(which: str, request: pytest.FixtureRequest) -> None:
    """Every INTEGRATION_* variable a service sets is read by the settings module."""
    config = request.getfixturevalue(which)
    for name, service in config["services"].items():
        for variable in service.get("environment", {}):
            if variable.startswith("INTEGRATION_"):
                field = variable.removeprefix("INTEGRATION_").lower()
                assert field in Settings.model_fields, f"{name}: {variable} is not read"


def test_gateway_runs_integration_serve_with_real_options(resolved: dict[str, Any]) -> None:
    """The gateway's command parses as `integration serve` and listens on the published port."""
    gateway = resolved["services"]["gateway"]
    command = gateway["command"]
    assert command[:2] == ["integration", "serve"]
    context = cli.commands["serve"].make_context("serve", command[2:])
    assert context.params["host"] == "0.0.0.0"
    assert context.params["port"] == GATEWAY_PORT
    assert GATEWAY_PORT in published(gateway)
    assert f"127.0.0.1:{GATEWAY_PORT}/readyz" in " ".join(gateway["healthcheck"]["test"])


def declared_queues() -> set[str]:
    """Every queue the service declares: its types', Celery's default, webhooks' and the
    self-healing loop's consumers'."""
    from integration.events.webhooks import WEBHOOK_TYPE
    from integration.loop.stages import STAGES

    builtin = Registry(builtin_types(lambda payload, envelope: {}))
    return set(builtin.queues()) | {DEFAULT_QUEUE, CELERY_QUEUE, WEBHOOK_TYPE} | {
        f"consumer.loop-{stage}" for stage in STAGES}


def test_every_queue_has_a_worker_and_every_worker_a_real_queue(
        resolved: dict[str, Any]) -> None:
    """Workers name only queues the service declares, and together consume all of them
    (Celery's default queue too); every worker sends task events from the start."""
    from celery.bin.celery import celery

    queues = declared_queues()
    options = {o for command in (celery, celery.commands["worker"]) for p in command.params
               for o in p.opts}
    consumed: set[str] = set()
    for name, service in workers(resolved).items():
        command = service["command"]
        assert {w for w in command if w.startswith("-")} <= options, f"{name}: unknown option"
        named = option_value(command, "-Q").split(",")
        assert set(named) <= queues, f"{name} consumes an unknown queue"
        assert "--task-events" in command, f"{name}: Flower sees every task from the start"
        # Unused, and Celery's restart of it after a lost broker fails with a traceback.
        assert "--without-gossip" in command, f"{name}: no gossip"
        consumed |= set(named)
        assert "container_name" not in service and not service.get("ports"), \
            f"{name} must scale: no container name, no published port"
    assert consumed == queues, "every queue has a worker"


def test_beat_and_flower_commands_are_real(resolved: dict[str, Any]) -> None:
    """Beat and Flower run the service's Celery app with options their commands accept."""
    from celery.bin.celery import celery
    from flower.options import options as flower_options

    services = resolved["services"]
    beat = services["beat"]["command"]
    assert beat[:4] == ["celery", "-A", "tasks", "beat"]
    beat_options = {o for command in (celery, celery.commands["beat"]) for p in command.params
                    for o in p.opts}
    assert {w for w in beat if w.startswith("-")} <= beat_options

    flower = services["flower"]["command"]
    assert flower[:2] == ["integration", "flower"] and "flower" in cli.commands
    for word in flower[2:]:
        name = word.lstrip("-").split("=", 1)[0].replace("-", "_")
        assert name in flower_options._options, f"flower has no option {word}"
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"], "never without a login"


def test_health_checks_are_real_commands(resolved: dict[str, Any]) -> None:
    """Every service has a health check; the ones using the CLIs use real options."""
    from celery.bin.celery import celery

    for name, service in resolved["services"].items():
        if not one_shot(service):
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    beat_check = resolved["services"]["beat"]["healthcheck"]["test"][1:]
    assert beat_check[:2] == ["integration", "check"]
    cli.commands["check"].make_context("check", beat_check[2:])
    inspect = {o for p in celery.commands["inspect"].params for o in p.opts}
    for name, service in workers(resolved).items():
        check = service["healthcheck"]["test"]
        assert check[0] == "CMD-SHELL" and "inspect ping" in check[1], name
        assert {w for w in check[1].split() if w.startswith("-") and w != "-A"} <= inspect
        # docker-compose prints the escaped form; the container's shell sees $HOSTNAME.
        assert "celery@$$HOSTNAME" in check[1], "each container pings its own worker"


def test_services_wait_for_what_they_need_and_restart(resolved: dict[str, Any]) -> None:
    """App services start once Redis is healthy; every long-running service is supervised."""
    services = resolved["services"]
    for name, service in app_services(resolved).items():
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    for name, service in services.items():
        if not one_shot(service):
            assert service.get("restart") in ("unless-stopped", "always"), name


def test_redis_is_durable_and_never_evicts(resolved: dict[str, Any]) -> None:
    """The compose Redis keeps its data (AOF) and refuses writes instead of evicting."""
    command = resolved["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert "ports" not in resolved["services"]["redis"], "Redis stays on the compose network"


def test_ports_match_what_the_processes_listen_on(resolved: dict[str, Any]) -> None:
    """Published and scraped ports are the ones the gateway, workers and tools open."""
    services = resolved["services"]
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}

    gateway = services["gateway"]
    metrics_port = int(setting_value(gateway, "INTEGRATION_GATEWAY_METRICS_PORT"))
    assert metrics_port == GATEWAY_METRICS_PORT
    assert setting_value(gateway, "INTEGRATION_GATEWAY_METRICS_HOST") == "0.0.0.0"
    targets = [t for c in jobs["integration-gateway"]["static_configs"] for t in c["targets"]]
    assert targets == [f"gateway:{metrics_port}"]
    assert metrics_port not in published(gateway), "metrics stay off the host"

    [discovery] = jobs["integration-workers"]["dns_sd_configs"]
    for name, service in workers(resolved).items():
        assert int(setting_value(service, "INTEGRATION_METRICS_PORT")) == discovery["port"]
        assert setting_value(service, "INTEGRATION_METRICS_HOST") == "0.0.0.0", \
            f"{name}: Prometheus cannot scrape a loopback-only endpoint"
        assert str(discovery["port"]) in {str(p) for p in service.get("expose", [])}

    flower = services["flower"]
    assert int(option_value(flower["command"], "--port")) == FLOWER_PORT
    assert FLOWER_PORT in published(flower)
    assert f":{FLOWER_PORT}/healthcheck" in " ".join(flower["healthcheck"]["test"])

    prometheus = services["prometheus"]
    assert option_value(prometheus["command"], "--web.listen-address") == f":{PROMETHEUS_PORT}"
    assert PROMETHEUS_PORT in published(prometheus)
    assert f":{PROMETHEUS_PORT}/-/ready" in " ".join(prometheus["healthcheck"]["test"])

    grafana = services["grafana"]
    assert int(grafana["environment"]["GF_SERVER_HTTP_PORT"]) == GRAFANA_PORT
    assert GRAFANA_PORT in published(grafana)
    assert f":{GRAFANA_PORT}/api/health" in " ".join(grafana["healthcheck"]["test"])
    for name in ("flower", "prometheus", "grafana"):
        host = next(iter(published(services[name]).values()))
        assert host.startswith("127.0.0.1:"), f"{name} is published on loopback by default"


def test_prometheus_scrapes_every_worker_service(resolved: dict[str, Any]) -> None:
    """deploy/prometheus.yml discovers every worker service of the compose file."""
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    [job] = [j for j in scrape["scrape_configs"] if j["job_name"] == "integration-workers"]
    named = {n for config in job["dns_sd_configs"] for n in config["names"]}
    assert named == set(workers(resolved))


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts of a service: container path to host path (named volumes left out)."""
    found: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        source, target = (volume["source"], volume["target"]) if isinstance(volume, dict) \
            else volume.split(":")[:2]
        if source.startswith("/"):
            found[target] = Path(source)
    return found


def host_path(service: dict[str, Any], container_path: str) -> Path:
    for target, source in sorted(mounts(service).items(), key=lambda m: -len(m[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / Path(container_path).relative_to(target)
    raise AssertionError(f"{container_path} is not mounted")


def test_prometheus_mounts_its_config_and_alert_rules(resolved: dict[str, Any]) -> None:
    """Prometheus reads deploy/prometheus.yml and the rule files it names, from the repo."""
    prometheus = resolved["services"]["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:")
    config_path = option_value(prometheus["command"], "--config.file")
    config = host_path(prometheus, config_path)
    assert config == DEPLOY / "prometheus.yml"
    for rule_file in yaml.safe_load(config.read_text())["rule_files"]:
        mounted = host_path(prometheus, str(Path(config_path).parent / rule_file))
        assert mounted == DEPLOY / rule_file and mounted.exists()


def test_grafana_provisions_the_datasource_and_the_dashboard(resolved: dict[str, Any]) -> None:
    """The provisioning files exist, point at the compose Prometheus and at the dashboard."""
    import json

    grafana = resolved["services"]["grafana"]
    assert grafana["image"].startswith("grafana/grafana:")
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    provisioning = host_path(grafana, "/etc/grafana/provisioning")
    assert provisioning == DEPLOY / "grafana" / "provisioning"

    [datasources] = (provisioning / "datasources").glob("*.yml")
    [source] = yaml.safe_load(datasources.read_text())["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    assert source["url"] == f"http://prometheus:{PROMETHEUS_PORT}"

    [dashboards] = (provisioning / "dashboards").glob("*.yml")
    [provider] = yaml.safe_load(dashboards.read_text())["providers"]
    folder = provider["options"]["path"].rstrip("/") + "/"
    loaded = [source for target, source in mounts(grafana).items()
              if target.startswith(folder) and target.endswith(".json")]
    assert loaded == [DEPLOY / "grafana" / "integration-dashboard.json"]
    [dashboard] = loaded
    assert json.loads(dashboard.read_text())["templating"]["list"][0]["query"] == "prometheus", \
        "the dashboard's data source variable finds the provisioned Prometheus"


def test_rabbitmq_override_points_every_app_service_at_amqp(on_rabbitmq: dict[str, Any]) -> None:
    """With the override every service using the broker gets an amqp URL and waits for it."""
    services = on_rabbitmq["services"]
    rabbitmq = services["rabbitmq"]
    assert "rabbitmq-diagnostics" in rabbitmq["healthcheck"]["test"]
    assert "rabbitmq-data:/var/lib/rabbitmq:rw" in rabbitmq["volumes"], \
        "queues survive a recreated container"
    assert "rabbitmq-data" in on_rabbitmq["volumes"]
    assert rabbitmq.get("hostname"), "a fixed node name keeps the data directory"
    password = rabbitmq["environment"]["RABBITMQ_DEFAULT_PASS"]
    user = rabbitmq["environment"]["RABBITMQ_DEFAULT_USER"]
    vhost = rabbitmq["environment"]["RABBITMQ_DEFAULT_VHOST"]
    apps = app_services(on_rabbitmq)
    assert set(apps) >= {"gateway", "beat", "flower", *workers(on_rabbitmq)}
    for name, service in apps.items():
        url = service["environment"]["INTEGRATION_BROKER_URL"]
        assert url == f"amqp://{user}:{password}@rabbitmq:5672/{vhost}", name
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy", name
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", \
            f"{name}: Redis stays the status store"


def test_only_flowers_image_has_flower(resolved: dict[str, Any]) -> None:
    """The service's image is the Dockerfile's last stage (the runtime only); Flower's image is
    its `flower` target, the one stage that installs the extra."""
    stages = re.findall(r"^FROM \S+ AS (\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert stages[-1] == "service" and "flower" in stages
    for name, service in app_services(resolved).items():
        target = (service.get("build") or {}).get("target")
        assert target == ("flower" if name == "flower" else None), name
    assert "[flower]" in (ROOT / "Dockerfile").read_text().split("AS flower", 1)[1].split(
        "FROM", 1)[0]
