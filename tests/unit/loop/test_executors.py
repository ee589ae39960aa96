"""The targets file and the body templates of the http executor (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from integration.loop.executors import Targets, TargetSpec, UndeclaredTarget, render, run_action
from integration.loop.payloads import ActionPayload
from integration.messages.envelope import Envelope
from integration.messages.retry import PermanentError, classify
from integration.settings import ConfigurationError

RULES = """
targets:
  web-restart:
    executor: http
    url: https://ops.example.internal/api/restart
    method: POST
    timeout_seconds: 5
    headers: {X-Api-Key: "Bearer ${RESTART_API_KEY}"}
    body: {service: "{target}", reason: "{action}"}
  announce:
    executor: log
# Keys of the self-healing rules, read elsewhere:
rules:
  - when: {alert: HighCPU}
    do: {action: restart, target: web-restart}
playbooks: {}
"""


def secrets(name: str) -> SecretStr | None:
    return SecretStr("s3cr3t-value") if name == "RESTART_API_KEY" else None


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def test_targets_are_read_and_other_keys_ignored(tmp_path: Path) -> None:
    """The rules file's `targets:` become specs; its other top-level keys are not ours."""
    targets = Targets.load(write(tmp_path, RULES), secret=secrets)
    assert set(targets.targets) == {"web-restart", "announce"}
    spec = targets.get("web-restart", "http")
    assert spec.method == "POST" and spec.timeout_seconds == 5
    assert spec.headers["X-Api-Key"].get_secret_value() == "Bearer s3cr3t-value"
    assert "s3cr3t" not in repr(spec)
    assert Targets.load(write(tmp_path, "rules: []\n")).targets == {}
    assert Targets.load(write(tmp_path, "")).targets == {}


def test_a_target_is_found_only_for_its_own_executor(tmp_path: Path) -> None:
    """An action cannot reach a URL that is not declared, nor a target declared for another
    executor; both are permanent errors."""
    targets = Targets.load(write(tmp_path, RULES), secret=secrets)
    for name, executor, message in (("https://evil.example/", "http", "not declared"),
                                    ("announce", "http", "log executor")):
        with pytest.raises(UndeclaredTarget, match=message) as missing:
            targets.get(name, executor)
        assert classify(missing.value) == "permanent"


@pytest.mark.parametrize("spec, problem", [
    ("{executor: http}", "targets.t: Value error, an http target needs"),
    ("{executor: http, url: 'ftp://x/'}", "an http target needs"),
    ("{executor: http, url: 'https://u:p@x/'}", "user:password"),
    ("{executor: shell, url: 'https://x/'}", "targets.t.executor"),
    ("{executor: log, url: 'https://x/'}", "a log target has no url"),
    ("{executor: http, url: 'https://x/', body: {a: '{env.HOME}'}}", "unknown placeholder"),
    ("{executor: http, url: 'https://x/', headers: {Host: x}}", "set by the connection"),
    ("{executor: http, url: 'https://x/', method: TRACE}", "targets.t.method"),
    ("{executor: http, url: 'https://x/', timeout_seconds: 0}", "timeout_seconds"),
    ("{executor: http, url: 'https://x/', extra: 1}", "targets.t.extra"),
])
def test_a_bad_target_is_a_configuration_error_naming_it(
    tmp_path: Path, spec: str, problem: str
) -> None:
    """Each mistake names the file, the target and the field."""
    path = write(tmp_path, f"targets:\n  t: {spec}\n")
    with pytest.raises(ConfigurationError, match=problem) as bad:
        Targets.load(path)
    assert str(path) in str(bad.value)


@pytest.mark.parametrize("text, problem", [
    ("targets: [unclosed", "not valid YAML"),
    ("- a list\n", "top level must be a mapping"),
    ("targets: [a, b]\n", "targets"),
])
def test_a_malformed_file_is_a_configuration_error(
    tmp_path: Path, text: str, problem: str
) -> None:
    """A file that is not a mapping of targets fails loudly instead of declaring nothing."""
    with pytest.raises(ConfigurationError, match=problem):
        Targets.load(write(tmp_path, text))


def test_a_missing_file_or_secret_is_a_configuration_error(tmp_path: Path) -> None:
    """The message says which file, or which environment variable to set."""
    with pytest.raises(ConfigurationError, match="cannot read"):
        Targets.load(tmp_path / "absent.yaml")
    with pytest.raises(ConfigurationError, match="INTEGRATION_SECRET_RESTART_API_KEY"):
        Targets.load(write(tmp_path, RULES), secret=lambda name: None)


def test_a_secret_never_appears_in_a_configuration_error(tmp_path: Path) -> None:
    """A header value that fails validation is reported by name, not by value."""
    path = write(tmp_path, 'targets:\n  t: {executor: http, url: "https://x/", '
                           'headers: {X-Key: "${RESTART_API_KEY}\\nInjected: 1"}}\n')
    with pytest.raises(ConfigurationError) as bad:
        Targets.load(path, secret=secrets)
    assert "X-Key contains a line break" in str(bad.value)
    assert "s3cr3t" not in str(bad.value)


def test_body_templates_fill_only_the_named_values() -> None:
    """A lone placeholder keeps the value's JSON type; in text it is written as text;
    ``{{`` is a literal brace; a missing parameter is a permanent error."""
    values = {"target": "web", "action": "restart", "parameters": {"replicas": 2}}
    template = {"service": "{target}", "n": "{parameters.replicas}",
                "note": "{action} {target} x{parameters.replicas} {{raw}}", "keep": [1, None]}
    assert render(template, values) == {"service": "web", "n": 2,
                                        "note": "restart web x2 {raw}", "keep": [1, None]}
    with pytest.raises(PermanentError, match="parameter 'missing'"):
        render("{parameters.missing}", values)


def handle_action(payload: ActionPayload, envelope: Envelope) -> dict[str, object]:
    """The action handler with no declared target and no way out."""
    return run_action(payload, envelope, targets=Targets,
                      egress=lambda: pytest.fail("no call"))


def test_noop_and_log_actions_need_no_declaration() -> None:
    """``noop`` records the action as before; ``log`` succeeds for any target name."""
    envelope = Envelope(type="action", source="tests")
    noop = handle_action(ActionPayload(action="x", target="y", parameters={"a": 1}), envelope)
    assert noop == {"action": "x", "target": "y", "executor": "noop", "executed": True,
                    "dry_run": False, "parameters": {"a": 1}}
    logged = handle_action(ActionPayload(action="x", target="y", executor="log"), envelope)
    assert logged["executed"] is True and logged["executor"] == "log"


def test_an_http_spec_describes_the_call_without_making_it_on_dry_run() -> None:
    """A dry run of an http action reports what would be called and calls nothing."""
    from integration.loop.executors import execute

    spec = TargetSpec(executor="http", url="https://ops.example/api/restart?token=t")
    result = execute(ActionPayload(action="x", target="web", executor="http", dry_run=True),
                     spec, None)
    assert result["executed"] is False
    assert result["would_call"] == {"method": "POST", "url": "https://ops.example/api/restart"}


def test_unusable_egress_settings_end_an_http_action_dead() -> None:
    """A bad allowlist or proxy setting is the service's, not the target's: a permanent
    error that names it, rather than retries."""
    from integration.settings import ConfigurationError

    def unusable() -> object:
        raise ConfigurationError("INTEGRATION_EGRESS_PROXY: must be an http:// URL")

    declared = Targets(targets={"web": TargetSpec(executor="http", url="https://ops.example/")})
    with pytest.raises(PermanentError, match="INTEGRATION_EGRESS_PROXY"):
        run_action(ActionPayload(action="x", target="web", executor="http"),
                   Envelope(type="action", source="tests"), targets=lambda: declared,
                   egress=unusable)  # type: ignore[arg-type]
