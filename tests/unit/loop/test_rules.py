"""The rules file, and the diagnosis and playbook stages: pure functions, no Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.loop.rules import PlanError, Rules, TargetNotAllowed, load_rules, parse_rules
from integration.loop.templates import placeholder_values, render
from integration.loop.types import ActionPayload, DiagnosisPayload
from integration.messages.retry import classify
from integration.settings import ConfigurationError, Settings

VALID: dict[str, Any] = {
    "thresholds": [{"name": "HighCPU", "metric": "cpu", "op": ">", "value": 90, "clear": 80}],
    "diagnoses": [{"name": "runaway", "match": {"alert": "HighCPU"},
                   "probable_cause": "runaway process on {labels.host}", "confidence": 0.8,
                   "findings": ["{annotations.summary}"],
                   "recommended_action": "restart"}],
    "playbooks": {"restart": {"action": "restart-service", "target": "{labels.host}",
                              "executor": "log", "parameters": {"unit": "{labels.service}"}}},
}


def rules_with(**changes: Any) -> Rules:
    """Rules from VALID with whole sections replaced."""
    return parse_rules({**VALID, **changes}, "rules.yaml")


def error_of(data: Any) -> str:
    """The message of the ConfigurationError that ``data`` gives."""
    with pytest.raises(ConfigurationError) as caught:
        parse_rules(data, "rules.yaml")
    return str(caught.value)


def test_shipped_example_loads_and_closes_the_loop() -> None:
    """The default rules turn a hot CPU alert into a restart of the alert's host."""
    rules = load_rules(None)
    assert [r.name for r in rules.thresholds] == ["HighCPU", "DiskAlmostFull"]
    diagnosis = rules.diagnose({"name": "HighCPU", "labels": {"host": "web-1"},
                                "annotations": {"summary": "CPU at 95%"}})
    assert diagnosis is not None
    assert diagnosis["probable_cause"] == "runaway process"
    DiagnosisPayload.model_validate(diagnosis)
    action = rules.plan(diagnosis, {"host": "web-1"})
    assert action is not None
    assert action["target"] == "web-1"
    ActionPayload.model_validate(action)


def test_rules_file_setting_defaults_to_the_shipped_example() -> None:
    """Without INTEGRATION_RULES_FILE the shipped example is used."""
    default = Settings.model_fields["rules_file"].default
    assert default is None
    assert load_rules(default).thresholds


@pytest.mark.parametrize("rule, expected", [
    ({"op": ">", "value": 90, "clear": 95}, "field clear: Value error, clear 95 must be at or "
     "below value 90"),
    ({"op": "<", "value": 10, "clear": 5}, "clear 5 must be at or above value 10"),
    ({"op": "=>", "value": 90}, "field op"),
    ({"op": ">", "value": 90, "for_seconds": -1}, "field for_seconds"),
    ({"op": ">", "value": 90, "severity": "page"}, "field severity"),
    ({"op": ">", "value": 90, "window": 5}, "field window"),
    ({"op": ">", "value": ".nan"}, "field value"),
    ({"op": ">", "value": 90, "annotations": {"s": "{valeu}"}}, "unknown placeholder {valeu}"),
])
def test_bad_threshold_rule_is_named_with_its_field(rule: dict[str, Any], expected: str) -> None:
    """A broken threshold rule stops loading with the file, the rule's name and the field."""
    message = error_of({"thresholds": [{"name": "HighCPU", "metric": "cpu", **rule}]})
    assert "rules.yaml" in message
    assert "thresholds rule 'HighCPU' (#1)" in message
    assert expected in message


def test_duplicate_threshold_names_are_refused() -> None:
    """Two threshold rules with one name would share state, so the second is named."""
    rule = {"name": "HighCPU", "metric": "cpu", "op": ">", "value": 90}
    message = error_of({"thresholds": [rule, {**rule, "value": 95}]})
    assert "thresholds rule 'HighCPU' (#2), field name" in message


def test_threshold_name_with_colon_is_refused() -> None:
    """Names with ':' are kept for inline thresholds (``<metric>:<level>``)."""
    message = error_of({"thresholds": [{"name": "cpu:high", "metric": "cpu", "op": ">",
                                        "value": 1}]})
    assert "field name" in message


@pytest.mark.parametrize("change, expected", [
    ({"confidence": 1.5}, "field confidence"),
    ({"recommended_action": "reboot"}, "field recommended_action: no playbook 'reboot'"),
    ({"match": {"alert": "HighCPU", "status": "resolved"}}, "field match.status"),
    ({"probable_cause": "{labels}"}, "unknown placeholder {labels}"),
])
def test_bad_diagnosis_rule_is_named_with_its_field(change: dict[str, Any],
                                                    expected: str) -> None:
    """A broken diagnosis rule is named (by its name and position) with the field at fault."""
    message = error_of({**VALID, "diagnoses": [{**VALID["diagnoses"][0], **change}]})
    assert "diagnoses rule 'runaway' (#1)" in message
    assert expected in message


@pytest.mark.parametrize("change, expected", [
    ({"executor": "shell"}, "field executor"),
    ({"target": "{host}"}, "unknown placeholder {host}"),
    ({"command": "rm -rf /"}, "field command"),
])
def test_bad_playbook_is_named_with_its_field(change: dict[str, Any], expected: str) -> None:
    """A broken playbook is named with the field at fault; only declared executors exist."""
    message = error_of({**VALID, "playbooks": {"restart": {**VALID["playbooks"]["restart"],
                                                           **change}}})
    assert "playbook 'restart'" in message
    assert expected in message


def test_unknown_section_is_refused_but_targets_accepted() -> None:
    """An unknown top-level key stops loading; ``targets`` (another module's) is accepted."""
    assert "rule:" in error_of({**VALID, "rule": []})
    assert "expected a mapping" in error_of(["a", "b"])
    assert rules_with(targets={"web": {"url": "https://example.org"}}).playbooks


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    """A missing file or broken YAML is reported with the file's path."""
    with pytest.raises(ConfigurationError, match="nowhere.yaml"):
        load_rules(str(tmp_path / "nowhere.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("thresholds: [\n")
    with pytest.raises(ConfigurationError, match="broken.yaml cannot be read"):
        load_rules(str(broken))


def test_rules_file_is_read_from_the_path(tmp_path: Path) -> None:
    """A file given by path is read and validated."""
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(VALID))
    assert [r.name for r in load_rules(str(path)).thresholds] == ["HighCPU"]


def test_diagnosis_matches_name_pattern_and_labels() -> None:
    """The first rule whose alert pattern and labels match gives the diagnosis."""
    rules = rules_with(diagnoses=[
        {"name": "db", "match": {"alert": "High*", "labels": {"role": "db"}},
         "probable_cause": "slow queries", "confidence": 0.9},
        {"name": "any", "match": {"alert": "High*"}, "probable_cause": "load", "confidence": 0.4},
    ])
    db = rules.diagnose({"name": "HighCPU", "labels": {"role": "db"}})
    web = rules.diagnose({"name": "HighMemory", "labels": {"role": "web"}})
    assert db is not None and db["probable_cause"] == "slow queries"
    assert web is not None and web["probable_cause"] == "load"
    assert rules.diagnose({"name": "DiskFull", "labels": {}}) is None


def test_diagnosis_fills_placeholders_from_the_alert() -> None:
    """Label and annotation placeholders are filled from the alert being diagnosed."""
    diagnosis = rules_with().diagnose({
        "name": "HighCPU", "status": "firing", "labels": {"host": "web-1"},
        "annotations": {"summary": "CPU at 97%"}})
    assert diagnosis == {"alert": "HighCPU", "probable_cause": "runaway process on web-1",
                         "confidence": 0.8, "findings": ["CPU at 97%"],
                         "recommended_action": "restart"}


def test_resolved_alert_gets_no_diagnosis() -> None:
    """A resolved alert closes the loop: no diagnosis, so no action."""
    assert rules_with().diagnose({"name": "HighCPU", "status": "resolved",
                                  "labels": {"host": "web-1"}}) is None


def test_plan_fills_target_and_parameters_from_alert_labels() -> None:
    """The playbook's target and string parameters come from the alert's labels."""
    rules = rules_with()
    diagnosis = rules.diagnose({"name": "HighCPU", "labels": {"host": "web-1"}})
    assert diagnosis is not None
    action = rules.plan(diagnosis, {"host": "web-1", "service": "nginx"})
    assert action == {"action": "restart-service", "target": "web-1", "executor": "log",
                      "parameters": {"unit": "nginx"}, "dry_run": False}


def test_plan_without_action_or_confidence_is_none() -> None:
    """No recommendation, or one below its minimum confidence, plans nothing."""
    rules = rules_with()
    assert rules.plan({"alert": "HighCPU", "recommended_action": None}, {}) is None
    assert rules.plan({"alert": "HighCPU", "recommended_action": "restart",
                       "confidence": 0.3}, {"host": "a", "service": "b"}) is None


def test_plan_with_unknown_playbook_is_a_permanent_error() -> None:
    """A diagnosis recommending a playbook the file lacks fails clearly, never retried."""
    with pytest.raises(PlanError, match="'reboot', which the rules file does not define") as e:
        rules_with().plan({"alert": "HighCPU", "recommended_action": "reboot",
                           "confidence": 0.9}, {"host": "a"})
    assert classify(e.value) == "permanent"


def test_plan_with_missing_target_label_names_it() -> None:
    """A target placeholder the alert's labels cannot fill is named in the error."""
    with pytest.raises(PlanError, match=r"needs \{labels.host\}"):
        rules_with().plan({"alert": "HighCPU", "recommended_action": "restart"},
                          {"service": "nginx"})


def playbook_with(**fields: Any) -> Rules:
    """VALID with its playbook changed."""
    return rules_with(playbooks={"restart": {**VALID["playbooks"]["restart"], **fields}})


def test_a_label_target_outside_allowed_targets_is_refused() -> None:
    """A target filled from labels runs only if allowed_targets has it (names or patterns);
    any other is a permanent TargetNotAllowed naming the playbook and the target."""
    rules = playbook_with(allowed_targets=["web-*", "db-1"])
    diagnosis = {"alert": "HighCPU", "recommended_action": "restart", "confidence": 0.9}
    for host in ("web-7", "db-1"):
        plan = rules.plan(diagnosis, {"host": host, "service": "s"})
        assert plan is not None and plan["target"] == host
    with pytest.raises(TargetNotAllowed, match="playbook 'restart' refused target 'db-2'") as e:
        rules.plan(diagnosis, {"host": "db-2", "service": "s"})
    assert classify(e.value) == "permanent"


def test_an_http_playbook_with_a_label_target_needs_allowed_targets() -> None:
    """Labels may not choose among every declared http target: the file must bound them."""
    message = error_of({**VALID, "playbooks": {"restart": {
        **VALID["playbooks"]["restart"], "executor": "http"}}})
    assert "playbook 'restart'" in message and "needs allowed_targets" in message
    assert playbook_with(executor="http", allowed_targets=["web-1"]).playbooks


def test_a_literal_target_must_be_among_its_own_allowed_targets() -> None:
    """A playbook whose fixed target its allowed_targets leaves out never loads."""
    message = error_of({**VALID, "playbooks": {"restart": {
        **VALID["playbooks"]["restart"], "target": "web-1", "allowed_targets": ["db-*"]}}})
    assert "not among allowed_targets" in message


def test_placeholder_numbers_read_as_written() -> None:
    """Numbers fill placeholders as people write them, large ones without exponents."""
    values = placeholder_values(value=1048576.0, threshold=90.0, clear=79.5)
    assert render("{value} {threshold} {clear} {labels.x}", values) == \
        "1048576 90 79.5 {labels.x}"


def test_empty_sections_leave_a_stage_to_others() -> None:
    """An empty file, or one without diagnoses, loads: that stage is fed from elsewhere."""
    assert parse_rules(None, "rules.yaml") == Rules()
    rules = parse_rules({"playbooks": VALID["playbooks"]}, "rules.yaml")
    assert rules.diagnose({"name": "HighCPU", "labels": {"host": "a"}}) is None
    action = rules.plan({"alert": "HighCPU", "recommended_action": "restart", "confidence": 0.9},
                        {"host": "a", "service": "b"})
    assert action is not None and action["target"] == "a"
