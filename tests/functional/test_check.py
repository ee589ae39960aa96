"""`integration check`: each kind of broken deployment is named, with exit status 1."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.app import default_registry, get_settings
from integration.ops.embedded_redis import EmbeddedRedis, free_port
from tests.conftest import ROOT

STRONG_SECRET = secrets.token_urlsafe(48)
RULES = """
thresholds:
  - name: HighCPU
    metric: cpu_usage_percent
    op: ">"
    value: 90
diagnoses:
  - match: {alert: HighCPU}
    probable_cause: runaway process
    confidence: 0.8
    recommended_action: restart-api
playbooks:
  restart-api:
    action: restart
    target: api
    executor: http
targets:
  api:
    executor: http
    url: http://127.0.0.1:9/restart
    timeout_seconds: 5
    headers:
      Authorization: "Bearer ${CHECK_API_TOKEN}"
"""
POLICY = """
roles:
  monitoring: {submit: [metric, alert], rate_limit: 100/second}
  admin: {submit: ["*"], read: any, manage: [dead_letters]}
"""


@pytest.fixture(scope="module")
def durable_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis as production wants it: AOF on, noeviction."""
    with EmbeddedRedis(tmp_path_factory.mktemp("durable"), persistent=True) as server:
        yield server.url


@pytest.fixture(scope="module")
def good_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("config")
    (directory / "rules.yaml").write_text(RULES)
    (directory / "policy.yaml").write_text(POLICY)
    return {"INTEGRATION_RULES_FILE": str(directory / "rules.yaml"),
            "INTEGRATION_POLICY_FILE": str(directory / "policy.yaml")}


@pytest.fixture
def good_env(durable_redis: str, good_files: dict[str, str]) -> dict[str, str]:
    """A complete production configuration that passes every check."""
    return {"INTEGRATION_ENV": "production", "INTEGRATION_JWT_SECRET": STRONG_SECRET,
            "INTEGRATION_REDIS_URL": durable_redis, **good_files,
            "INTEGRATION_SECRET_CHECK_API_TOKEN": "token-for-the-api",
            "INTEGRATION_EGRESS_ALLOWLIST": "127.0.0.1/32",
            # Long enough for the target (5 s), short enough for a test to exceed it.
            "INTEGRATION_VISIBILITY_TIMEOUT_SECONDS": "100"}


def run_check(env: dict[str, str | None], *args: str) -> subprocess.CompletedProcess[str]:
    """The command with exactly ``env`` as its configuration (every other INTEGRATION_*
    variable unset). In-process through click's runner: the command reads its settings
    afresh, and a process per case would cost a second of imports each."""
    from click.testing import CliRunner

    from integration.ops.cli import main

    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("INTEGRATION_")}
    try:
        result = CliRunner().invoke(main, ["check", *args], env={**unset, **env})
    finally:
        # What the command cached under its configuration must not outlive it: a later
        # test in this process would see its settings and its registry of types.
        get_settings.cache_clear()
        default_registry.cache_clear()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["integration", "check", *args], result.exit_code,
                                       result.stdout, result.stderr)


def report(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def findings(result: subprocess.CompletedProcess[str], level: str) -> list[tuple[str, str]]:
    return [(f["check"], f["message"]) for f in report(result)["checks"] if f["level"] == level]


def test_a_good_configuration_exits_0_with_every_check_ok(good_env: dict[str, str]) -> None:
    """A complete production configuration passes every check, even with --strict."""
    result = run_check(good_env, "--strict")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "configuration ok"
    checks = {line.split()[1] for line in lines[:-1]}
    assert checks >= {"settings", "secrets", "policy", "rules", "targets", "durations",
                      "egress", "store", "broker"}
    assert all(line.startswith("ok ") for line in lines[:-1]), result.stdout
    assert "\x1b[" not in result.stdout, "no colour codes when stdout is not a terminal"
    assert STRONG_SECRET not in result.stdout and "token-for-the-api" not in result.stdout


BAD_FILES: dict[str, tuple[str, str, str]] = {
    # case: (file content, where it goes, what the message must say)
    "policy with an unknown field": ("roles:\n  ops: {submitt: [metric]}\n",
                                     "INTEGRATION_POLICY_FILE", "submitt"),
    "rules with a clear level on the wrong side": (
        "thresholds:\n  - {name: HighCPU, metric: cpu, op: '>', value: 90, clear: 95}\n",
        "INTEGRATION_RULES_FILE", "thresholds rule 'HighCPU' (#1), field clear"),
    "rules recommending a missing playbook": (
        "diagnoses:\n  - {probable_cause: x, confidence: 0.9, recommended_action: nope}\n",
        "INTEGRATION_RULES_FILE", "no playbook 'nope'"),
    "rules that are not YAML": ("thresholds: [\n", "INTEGRATION_RULES_FILE", "cannot be read"),
    "a target whose timeout reaches the visibility timeout": (
        "targets:\n  slow: {executor: http, url: 'https://example.com/', timeout_seconds: 120}\n",
        "INTEGRATION_RULES_FILE", "must be shorter than INTEGRATION_VISIBILITY_TIMEOUT_SECONDS"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_policy_or_rules_file_is_named(case: str, good_env: dict[str, str],
                                             tmp_path: Path) -> None:
    """A broken policy or rules file is an error naming the variable, the file and the fault."""
    content, variable, expected = BAD_FILES[case]
    path = tmp_path / "broken.yaml"
    path.write_text(content)
    result = run_check({**good_env, variable: str(path)}, "--json", "--offline")
    assert result.returncode == 1, result.stdout + result.stderr
    [(_, message)] = findings(result, "error")
    assert str(path) in message and expected in message, message
    assert variable in message or "targets." in message


def test_a_header_secret_missing_from_the_environment_is_named(
        good_env: dict[str, str]) -> None:
    """A ${NAME} in a target's headers without INTEGRATION_SECRET_<NAME> is an error."""
    result = run_check({**good_env, "INTEGRATION_SECRET_CHECK_API_TOKEN": None}, "--json",
                       "--offline")
    assert result.returncode == 1
    [(check, message)] = findings(result, "error")
    assert check == "targets"
    assert "set the environment variable INTEGRATION_SECRET_CHECK_API_TOKEN" in message


def test_an_http_playbook_needs_a_declared_target(good_env: dict[str, str],
                                                  tmp_path: Path) -> None:
    """A playbook calling a target that `targets:` does not declare fails the check."""
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.replace("target: api", "target: web"))
    result = run_check({**good_env, "INTEGRATION_RULES_FILE": str(path)}, "--json",
                       "--offline")
    assert result.returncode == 1
    [(_, message)] = findings(result, "error")
    assert "playbook 'restart-api' runs http target 'web'" in message


def test_an_http_playbook_may_only_allow_declared_targets(good_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    """allowed_targets of an http playbook must name targets `targets:` declares."""
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.replace("target: api\n", 'target: "{labels.service}"\n'
                                  "    allowed_targets: [api, web-*]\n"))
    result = run_check({**good_env, "INTEGRATION_RULES_FILE": str(path)}, "--json",
                       "--offline")
    assert result.returncode == 1
    [(_, message)] = findings(result, "error")
    assert "playbook 'restart-api' allows target 'web-*', which matches no target" in message


@pytest.mark.parametrize(("secret", "expected"), [
    (None, "INTEGRATION_JWT_SECRET is not set"),
    ("short", "INTEGRATION_JWT_SECRET is too weak for production"),
    ("replace-with-a-random-secret-of-at-least-32-bytes", "is a placeholder"),
    ("a" * 64, "bits of entropy"),
])
def test_a_missing_or_weak_production_secret_is_an_error(
        secret: str | None, expected: str, good_env: dict[str, str]) -> None:
    """Production refuses a missing, short or example token secret, and says so."""
    result = run_check({**good_env, "INTEGRATION_JWT_SECRET": secret}, "--json", "--offline")
    assert result.returncode == 1
    assert [m for c, m in findings(result, "error") if c == "secrets" and expected in m]


def test_check_reports_every_placeholder_of_env_example(good_env: dict[str, str]) -> None:
    """.env.example copied as it is: `check` names each of its secrets as an error."""
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text()
                   .splitlines() if line and not line.startswith("#"))
    env = {**good_env, "INTEGRATION_JWT_SECRET": example["INTEGRATION_JWT_SECRET"],
           "INTEGRATION_REDIS_URL": "redis://gateway:"
                                    f"{example['REDIS_GATEWAY_PASSWORD']}@redis:6379/0",
           "FLOWER_BASIC_AUTH": example["FLOWER_BASIC_AUTH"],
           "GRAFANA_ADMIN_PASSWORD": example["GRAFANA_ADMIN_PASSWORD"],
           "REDIS_EXPORTER_PASSWORD": example["REDIS_EXPORTER_PASSWORD"]}
    result = run_check(env, "--json", "--offline", "--only", "secrets")
    assert result.returncode == 1
    errors = " ".join(message for check, message in findings(result, "error"))
    for variable in ("INTEGRATION_JWT_SECRET", "INTEGRATION_REDIS_URL", "FLOWER_BASIC_AUTH",
                     "GRAFANA_ADMIN_PASSWORD", "REDIS_EXPORTER_PASSWORD"):
        assert variable in errors
    assert "openssl rand -base64 48" in errors and "openssl rand -hex 32" in errors
    assert "replace-with" not in result.stdout


def test_a_redis_elsewhere_without_a_password_is_a_warning(good_env: dict[str, str]) -> None:
    """A Redis on another host without a password is reported; a loopback one is not."""
    result = run_check({**good_env, "INTEGRATION_REDIS_URL": "redis://redis.internal:6379/0"},
                       "--json", "--offline", "--only", "secrets")
    warnings = [message for check, message in findings(result, "warning")]
    assert any("has no password" in message for message in warnings), warnings


def test_a_weak_secret_is_only_a_warning_in_development(good_env: dict[str, str]) -> None:
    """Development accepts a weak secret with a warning; --strict turns it into exit 1."""
    env = {**good_env, "INTEGRATION_ENV": "development", "INTEGRATION_JWT_SECRET": "short"}
    result = run_check(env, "--json", "--offline")
    assert result.returncode == 0
    assert [m for c, m in findings(result, "warning") if c == "secrets"]
    assert run_check(env, "--offline", "--strict").returncode == 1


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"INTEGRATION_STATUS_TTL_SECONDS": "120"}, "INTEGRATION_STATUS_TTL_SECONDS (120) must be"),
    ({"INTEGRATION_CLAIM_LEASE_SECONDS": "100"},
     "INTEGRATION_CLAIM_LEASE_SECONDS (100) must be shorter than "
     "INTEGRATION_VISIBILITY_TIMEOUT_SECONDS"),
    ({"INTEGRATION_WEBHOOK_TIMEOUT_SECONDS": "110"},
     "INTEGRATION_WEBHOOK_TIMEOUT_SECONDS (110) must be shorter than"),
])
def test_inconsistent_durations_are_errors(overrides: dict[str, str], expected: str,
                                           good_env: dict[str, str]) -> None:
    """TTLs shorter than retries plus redelivery, or calls outlasting the lease, fail."""
    result = run_check({**good_env, **overrides}, "--json", "--offline")
    assert result.returncode == 1, result.stdout
    messages = [m for c, m in findings(result, "error") if c == "durations"]
    assert any(expected in m for m in messages), messages


def test_quorum_queues_on_a_redis_broker_are_a_warning(good_env: dict[str, str]) -> None:
    """The setting does nothing on Redis, and check says so rather than staying silent."""
    result = run_check({**good_env, "INTEGRATION_AMQP_QUEUE_TYPE": "quorum"}, "--json")
    assert [m for c, m in findings(result, "warning")
            if c == "broker" and "INTEGRATION_AMQP_QUEUE_TYPE=quorum is ignored" in m]


def test_an_idempotency_key_outliving_its_status_is_a_warning(
        good_env: dict[str, str]) -> None:
    """A key kept longer than the status record would point at an expired status URL."""
    result = run_check({**good_env, "INTEGRATION_IDEMPOTENCY_TTL_SECONDS": str(30 * 86400)},
                       "--json", "--offline")
    assert result.returncode == 0
    assert [m for c, m in findings(result, "warning")
            if c == "durations" and "exceeds INTEGRATION_STATUS_TTL_SECONDS" in m]


def test_a_setting_of_the_wrong_type_is_named_by_variable(good_env: dict[str, str]) -> None:
    """A pydantic error is reported with the variable's name and what was given."""
    result = run_check({**good_env, "INTEGRATION_VISIBILITY_TIMEOUT_SECONDS": "soon",
                        "INTEGRATION_EGRESS_CONNECT_TIMEOUT_SECONDS": "0"}, "--json")
    assert result.returncode == 1
    messages = [m for c, m in findings(result, "error") if c == "settings"]
    assert any(m.startswith("INTEGRATION_VISIBILITY_TIMEOUT_SECONDS:") and "'soon'" in m
               for m in messages), messages
    assert any(m.startswith("INTEGRATION_EGRESS_CONNECT_TIMEOUT_SECONDS:") for m in messages)


def test_an_allowlist_entry_that_is_no_address_or_name_is_an_error(
        good_env: dict[str, str]) -> None:
    """The egress allowlist must parse; a refused literal target address is named too."""
    result = run_check({**good_env, "INTEGRATION_EGRESS_ALLOWLIST": "10.0.0.0/8,http://x/"},
                       "--json", "--offline")
    assert result.returncode == 1
    [(check, message)] = findings(result, "error")
    assert check == "egress" and "INTEGRATION_EGRESS_ALLOWLIST" in message
    refused = run_check({**good_env, "INTEGRATION_EGRESS_ALLOWLIST": ""}, "--json", "--offline")
    assert refused.returncode == 1
    [(_, message)] = findings(refused, "error")
    assert "target 'api' (127.0.0.1) is refused" in message


@pytest.mark.parametrize("variable", ["INTEGRATION_REDIS_URL", "INTEGRATION_BROKER_URL"])
def test_an_unreachable_store_or_broker_is_an_error(variable: str,
                                                    good_env: dict[str, str]) -> None:
    """A closed port is reported within the timeout, naming the variable, never a password."""
    port, password = free_port(), secrets.token_hex(32)
    url = (f"redis://:{password}@127.0.0.1:{port}/0" if variable == "INTEGRATION_REDIS_URL"
           else f"amqp://guest:{password}@127.0.0.1:{port}//")
    started = time.monotonic()
    result = run_check({**good_env, variable: url}, "--json", "--timeout", "2")
    assert time.monotonic() - started < 20
    assert result.returncode == 1
    [(check, message)] = findings(result, "error")
    assert check == ("store" if variable == "INTEGRATION_REDIS_URL" else "broker")
    assert message.startswith(f"{variable} ") and "does not answer" in message
    assert password not in result.stdout


def test_an_evicting_redis_is_an_error_in_production(good_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    """maxmemory-policy allkeys-lru fails in production and warns in development."""
    with EmbeddedRedis(tmp_path, persistent=True,
                       extra_args=("--maxmemory-policy", "allkeys-lru")) as server:
        env = {**good_env, "INTEGRATION_REDIS_URL": server.url}
        result = run_check(env, "--json")
        development = run_check({**env, "INTEGRATION_ENV": "development"}, "--json")
    assert result.returncode == 1
    [(check, message)] = findings(result, "error")
    assert check == "store" and "maxmemory-policy allkeys-lru" in message
    assert "set maxmemory-policy noeviction" in message
    assert development.returncode == 0
    assert [m for _, m in findings(development, "warning") if "allkeys-lru" in m]


def test_a_redis_without_persistence_is_a_warning(good_env: dict[str, str],
                                                  tmp_path: Path) -> None:
    """Neither AOF nor RDB snapshots: a restart would lose the queues."""
    with EmbeddedRedis(tmp_path, persistent=False) as server:
        result = run_check({**good_env, "INTEGRATION_REDIS_URL": server.url}, "--json")
    assert result.returncode == 0
    [(check, message)] = findings(result, "warning")
    assert check == "store" and "neither AOF nor RDB" in message


def test_only_and_usage_errors(good_env: dict[str, str]) -> None:
    """--only runs the named checks after the settings; an unknown name exits 2."""
    result = run_check(good_env, "--json", "--only", "broker")
    assert result.returncode == 0
    assert [f["check"] for f in report(result)["checks"]] == ["settings", "broker", "broker",
                                                              "broker"]
    assert run_check(good_env, "--only", "everything").returncode == 2
    assert run_check(good_env, "--timeout", "0").returncode == 2
