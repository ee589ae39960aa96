"""Where settings come from: the environment, then a running ``integration up`` stack's record
in the run directory, then ``.env``; a development stack ignores a deployment's keys there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from integration import sources
from integration.ops.cli import main
from integration.settings import DevStackSettings, Settings


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder of its own, with no INTEGRATION_* variable in the environment."""
    for name in list(os.environ):
        if name.startswith("INTEGRATION_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _record(folder: Path, pid: int, **values: object) -> None:
    (folder / ".run").mkdir(exist_ok=True)
    (folder / ".run" / "jwt-secret").write_text("a-development-secret-of-the-stack\n")
    sources.StackRecord(**{
        "pid": pid, "gateway_url": "http://127.0.0.1:8123", "host": "127.0.0.1", "port": 8123,
        "redis_url": "redis://127.0.0.1:41000/0", "redis_embedded": True, "metrics_port": 0,
        "jwt_secret_file": str(folder / ".run" / "jwt-secret"), **values,
    }).write(folder / ".run")  # type: ignore[arg-type]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_environment_then_the_running_stack_then_dotenv(
        folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / ".env").write_text("INTEGRATION_REDIS_URL=redis://from-dotenv:6379/0\n"
                                 "export INTEGRATION_LOG_LEVEL='DEBUG'\nINTEGRATION_PORT=9001\n")
    assert Settings().redis_url == "redis://from-dotenv:6379/0"
    assert Settings().log_level == "DEBUG"

    _record(folder, os.getpid())
    settings = Settings()
    assert settings.redis_url == "redis://127.0.0.1:41000/0"
    assert settings.port == 8123 and settings.env == "development"
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == "a-development-secret-of-the-stack"
    assert settings.log_level == "DEBUG"  # what the record does not say comes from .env
    assert sources.origin("INTEGRATION_REDIS_URL").startswith("the running stack's record")

    monkeypatch.setenv("INTEGRATION_REDIS_URL", "redis://from-environment:6379/0")
    assert Settings().redis_url == "redis://from-environment:6379/0"
    assert sources.origin("INTEGRATION_REDIS_URL") == "the environment"


def test_a_record_of_a_stack_that_is_gone_is_not_used(folder: Path) -> None:
    _record(folder, _dead_pid())
    assert sources.recorded_stack() is None
    assert Settings().redis_url == "redis://localhost:6379/0"
    assert sources.origin("INTEGRATION_REDIS_URL") == "the default"
    (folder / ".run" / "stack.json").write_text("not json")
    assert sources.recorded_stack(live_only=False) is None


def test_a_dev_stack_ignores_a_deployments_keys_in_dotenv(folder: Path) -> None:
    """The compose `.env` holds the production secret: `integration up` never takes it."""
    (folder / ".env").write_text("INTEGRATION_JWT_SECRET=the-production-secret\n"
                                 "INTEGRATION_REDIS_URL=redis://redis:6379/0\n"
                                 "INTEGRATION_ENV=production\nINTEGRATION_WORKER_CONCURRENCY=3\n")
    dev = DevStackSettings()
    assert dev.jwt_secret is None and dev.env == "production"  # the field's default
    assert "redis_url" not in dev.model_fields_set
    assert dev.worker_concurrency == 3
    assert Settings().jwt_secret is not None  # other commands read it


def test_no_dotenv_when_the_file_setting_is_empty(folder: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / ".env").write_text("INTEGRATION_PORT=9001\n")
    (folder / "other.env").write_text("INTEGRATION_PORT=9002\n")
    assert Settings().port == 9001
    monkeypatch.setenv("INTEGRATION_ENV_FILE", "other.env")
    assert Settings().port == 9002
    monkeypatch.setenv("INTEGRATION_ENV_FILE", "")
    assert Settings().port == 8000


def test_env_prints_the_running_stack_as_exports_without_its_secret(folder: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(main, ["env"])
    assert missing.exit_code == 1 and "make run" in missing.output

    _record(folder, os.getpid())
    result = runner.invoke(main, ["env"])
    assert result.exit_code == 0, result.output
    assert "export INTEGRATION_REDIS_URL=redis://127.0.0.1:41000/0" in result.output
    assert "export INTEGRATION_PORT=8123" in result.output
    assert "a-development-secret" not in result.output
    assert f"$(cat {folder / '.run' / 'jwt-secret'})" in result.output
    shown = json.loads(runner.invoke(main, ["env", "--json"]).output)
    assert shown["gateway_url"] == "http://127.0.0.1:8123" and shown["pid"] == os.getpid()


def test_a_stopped_stack_is_named_when_a_command_falls_back(
        folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    _record(folder, _dead_pid())
    CliRunner().invoke(main, ["token", "issue", "--sub", "x", "--role", "admin"])
    assert "is not running; INTEGRATION_REDIS_URL comes from the default" in caplog.text


def test_quorum_queues_only_on_rabbitmq() -> None:
    """``INTEGRATION_AMQP_QUEUE_TYPE=quorum`` applies to an AMQP broker and is ignored on Redis;
    classic stays the default."""
    amqp = "amqp://guest:guest@127.0.0.1:5672//"
    assert not Settings(broker_url=amqp).quorum_queues
    assert Settings(broker_url=amqp, amqp_queue_type="quorum").quorum_queues
    assert not Settings(amqp_queue_type="quorum").quorum_queues
    with pytest.raises(ValueError, match="amqp_queue_type"):
        Settings(amqp_queue_type="stream")
