"""Built-in handlers are plain functions: tested without a broker."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from integration.loop.executors import Targets, run_action
from integration.loop.payloads import (
    ActionPayload,
    AlertPayload,
    DiagnosisPayload,
    MetricPayload,
    alert_fingerprint,
)
from integration.loop.types import handle_alert, handle_diagnosis, handle_metric
from integration.messages.envelope import Envelope

ENVELOPE = Envelope(type="t", source="tests")


@pytest.mark.parametrize("value, severity", [(50, None), (85, "warning"), (99, "critical")])
def test_metric_severity_follows_thresholds(value: float, severity: str | None) -> None:
    payload = MetricPayload(name="cpu", value=value,
                            thresholds={"warning": 80, "critical": 95})
    result = handle_metric(payload, ENVELOPE)
    assert result["severity"] == severity
    assert result["breached"] is (severity is not None)


def test_metric_rejects_nan_and_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        MetricPayload.model_validate({"name": "cpu", "value": float("nan")})
    with pytest.raises(ValidationError):
        MetricPayload.model_validate({"name": "cpu", "value": 1, "extra": 1})


def test_alert_fingerprint_ignores_label_order() -> None:
    a = alert_fingerprint("HighCPU", {"host": "a", "dc": "x"})
    b = alert_fingerprint("HighCPU", {"dc": "x", "host": "a"})
    assert a == b != alert_fingerprint("HighCPU", {"host": "b", "dc": "x"})
    result = handle_alert(AlertPayload(name="HighCPU", status="resolved"), ENVELOPE)
    assert result["needs_diagnosis"] is False


def test_diagnosis_below_confidence_is_not_actionable() -> None:
    payload = DiagnosisPayload(alert="a", probable_cause="c", confidence=0.3,
                               recommended_action="restart")
    assert handle_diagnosis(payload, ENVELOPE)["actionable"] is False


def test_action_only_runs_declared_executors() -> None:
    with pytest.raises(ValidationError):
        ActionPayload.model_validate({"action": "x", "target": "y", "executor": "shell"})
    dry = run_action(ActionPayload(action="x", target="y", dry_run=True), ENVELOPE,
                     targets=Targets, egress=lambda: pytest.fail("no call"))
    assert dry["executed"] is False
