"""The compose Redis, run here as docker-compose would run it: without a password a client may
only PING; each component logs in as its own ACL user, and the message path, the revocation
list, `integration check` and the metrics exporter work under those users."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import yaml
from click.testing import CliRunner
from flask import Flask
from redis.exceptions import NoPermissionError

from integration.app import get_settings
from integration.ops.cli import main as cli
from integration.ops.embedded_redis import free_port
from tests.conftest import ROOT, WorkerProcess, wait_for, wait_status
from tests.functional.test_compose import compose_config

#: Stands in for the redis image's entrypoint, which drops root and runs its arguments.
ENTRYPOINT = '#!/bin/sh\nexec "$@"\n'


@dataclass
class ComposeRedis:
    port: int
    #: Each service's INTEGRATION_REDIS_URL, pointed at this server.
    urls: dict[str, str]
    process: subprocess.Popen[bytes]
    #: The services as docker-compose resolved them.
    services: dict[str, Any]

    def client(self, service: str | None = None, **options: Any) -> redis.Redis:
        if service is None:
            return redis.Redis(port=self.port, **options)
        return redis.Redis.from_url(self.urls[service], **options)


def unescaped(value: Any) -> Any:
    """What a container receives: docker-compose prints ``$$`` for a literal ``$``."""
    if isinstance(value, str):
        return value.replace("$$", "$")
    return [unescaped(item) for item in value]


def local(url: str, port: int) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rsplit("@", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{port}"))


@pytest.fixture(scope="module")
def compose_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeRedis]:
    """The redis service of docker-compose.yml (its command, its environment) with a .env of
    random passwords, on a free local port."""
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum is not installed")
    directory = tmp_path_factory.mktemp("compose-redis")
    env_file = directory / ".env"
    env_file.write_text("".join(
        f"{line.split('=', 1)[0]}={secrets.token_hex(32)}\n"
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")))
    result = compose_config(env_file, ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    service = services["redis"]
    (directory / "bin").mkdir()
    entrypoint = directory / "bin" / "docker-entrypoint.sh"
    entrypoint.write_text(ENTRYPOINT)
    entrypoint.chmod(0o755)
    port = free_port()
    process = subprocess.Popen(
        [*unescaped(service["command"]), "--port", str(port), "--bind", "127.0.0.1"],
        cwd=directory, stdout=(directory / "redis.log").open("wb"), stderr=subprocess.STDOUT,
        env={"PATH": f"{directory / 'bin'}:{os.environ['PATH']}",
             **{k: str(v) for k, v in service.get("environment", {}).items()}})
    server = ComposeRedis(port, {
        name: local(found["environment"]["INTEGRATION_REDIS_URL"], port)
        for name, found in services.items()
        if "INTEGRATION_REDIS_URL" in found.get("environment", {})}, process, services)
    try:
        wait_for(lambda: _pings(server), timeout=10, message="the compose redis answers")
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)


def _pings(server: ComposeRedis) -> bool:
    if server.process.poll() is not None:
        raise AssertionError("redis-server exited: see redis.log")
    try:
        return bool(server.client(socket_connect_timeout=0.5).ping())
    except redis.ConnectionError:
        return False


def test_without_a_password_redis_answers_only_ping(compose_redis: ComposeRedis) -> None:
    """The health check's PING works; reading or deleting a revocation does not."""
    anonymous = compose_redis.client()
    assert anonymous.ping()
    for command in (lambda: anonymous.get("integration:revoked:some-jti"),
                    lambda: anonymous.delete("integration:revoked-subject:x"),
                    lambda: anonymous.llen("metric")):
        with pytest.raises(NoPermissionError):
            command()


def test_each_component_logs_in_as_its_own_user(compose_redis: ComposeRedis) -> None:
    """Gateway, workers, beat and Flower authenticate as their own users; a wrong password
    is refused."""
    users = {name: compose_redis.client(name).acl_whoami() for name in compose_redis.urls}
    assert users["gateway"] == "gateway" and users["beat"] == "beat"
    assert users["flower"] == "flower" and users["worker-action"] == "worker"
    wrong = urlsplit(compose_redis.urls["gateway"])._replace(
        netloc=f"gateway:{secrets.token_hex(32)}@127.0.0.1:{compose_redis.port}")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(urlunsplit(wrong)).ping()


def test_no_component_may_run_dangerous_commands(compose_redis: ComposeRedis) -> None:
    """A component's password does not reach FLUSHALL, CONFIG SET or the ACL itself."""
    gateway = compose_redis.client("gateway")
    for command in (gateway.flushall, lambda: gateway.config_set("appendonly", "no"),
                    gateway.acl_list):
        with pytest.raises(NoPermissionError):
            command()


def test_the_message_path_runs_under_the_component_users(
        compose_redis: ComposeRedis, make_app: Callable[..., Flask], auth: dict[str, str],
        tmp_path: Path) -> None:
    """A gateway as the gateway user and a worker as the worker user take a message to
    succeeded and revoke a token; `integration check` as beat (its health check) reads
    what it needs."""
    worker = WorkerProcess(["event"], tmp_path / "worker.log",
                           env={"INTEGRATION_REDIS_URL": compose_redis.urls["worker-default"]})
    try:
        client = make_app(redis_url=compose_redis.urls["gateway"]).test_client()
        response = client.post("/api/v1/messages", headers=auth, json={
            "type": "event", "source": "acl", "data": {"n": uuid.uuid4().hex}})
        assert response.status_code == 202, response.get_json()
        assert wait_status(client, auth, response.get_json()["id"])["status"] == "succeeded"
        assert client.delete("/api/v1/tokens/some-jti", headers=auth).status_code == 204
        time.sleep(0.5)  # the worker's loops (heartbeat, reconciler) ran under its user too
    finally:
        worker.stop()
    assert "no permissions" not in worker.log_path.read_text(errors="replace")
    get_settings.cache_clear()
    try:
        checked = CliRunner().invoke(
            cli,
            ["check", "--only", "store", "--only", "broker", "--timeout", "5"],
            env={"INTEGRATION_REDIS_URL": compose_redis.urls["beat"]})
    finally:
        get_settings.cache_clear()
    assert checked.exit_code == 0, checked.output
    assert "does not answer" not in checked.output


EXPORTER = shutil.which("prometheus-redis-exporter") or shutil.which("redis_exporter")


@pytest.mark.skipif(EXPORTER is None, reason="the Redis exporter is not installed "
                                             "(apt-get install prometheus-redis-exporter)")
def test_the_exporter_reads_what_the_alerts_need_and_no_key(compose_redis: ComposeRedis,
                                                              tmp_path: Path) -> None:
    """redis_exporter logging in as the `exporter` user of the compose ACL exports Redis's
    state and its memory against maxmemory with no command refused, and may read no key."""
    assert EXPORTER is not None
    environment = compose_redis.services["redis-exporter"]["environment"]
    assert environment["REDIS_USER"] == "exporter"
    port = free_port()
    log = tmp_path / "exporter.log"
    process = subprocess.Popen(
        [EXPORTER, "-web.listen-address", f"127.0.0.1:{port}"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "REDIS_ADDR": f"redis://127.0.0.1:{compose_redis.port}",
             "REDIS_USER": "exporter", "REDIS_PASSWORD": str(environment["REDIS_PASSWORD"])})

    def scraped() -> dict[str, float]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",  # noqa: S310
                                        timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return {}
        return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                if line.startswith("redis_") and "{" not in line.split()[0]}

    try:
        metrics = wait_for(scraped, timeout=10, message="the exporter answers")
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert metrics["redis_up"] == 1
    assert metrics["redis_memory_max_bytes"] == 1024 ** 3, "maxmemory 1gb, the default"
    assert metrics["redis_memory_used_bytes"] > 0
    assert "redis_config_maxclients" in metrics and "redis_slowlog_length" in metrics
    assert "NOPERM" not in log.read_text(errors="replace")
    exporter = redis.Redis(port=compose_redis.port, username="exporter",
                           password=str(environment["REDIS_PASSWORD"]))
    for command in (lambda: exporter.get("integration:revoked:some-jti"),
                    lambda: exporter.llen("metric"), exporter.flushall):
        with pytest.raises(NoPermissionError):
            command()
