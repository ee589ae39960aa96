"""Built-in message types of the self-healing loop: metric, alert, diagnosis, action, result.

Each handler is a plain function of (payload, envelope) returning the JSON result that is
recorded with the message's status and published on ``<type>.succeeded``. Users replace a
stage by registering their own type (see the README).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from integration.loop.executors import run_action
from integration.messages.envelope import Envelope
from integration.messages.registry import MessageType

Timestamp = Annotated[datetime, Field(strict=False)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=4096)]
Labels = Annotated[dict[Name, Annotated[str, StringConstraints(max_length=1024)]],
                   Field(max_length=64)]


class Payload(BaseModel):
    """Base of built-in payloads: unknown fields are errors, and no type is coerced ("1" is not
    a number); timestamps are ISO 8601 strings, as JSON has no date type."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Thresholds(Payload):
    warning: float | None = Field(None, allow_inf_nan=False)
    critical: float | None = Field(None, allow_inf_nan=False)


class MetricPayload(Payload):
    """One sample of a metric, optionally with the thresholds that make it alert-worthy."""

    name: Name
    value: float = Field(allow_inf_nan=False)
    unit: Name | None = None
    labels: Labels = Field(default_factory=dict)
    observed_at: Timestamp | None = None
    thresholds: Thresholds | None = None


def handle_metric(payload: MetricPayload, envelope: Envelope) -> dict[str, Any]:
    """Evaluate the sample against its thresholds; the severity says whether to raise an alert."""
    severity = None
    if payload.thresholds is not None:
        if payload.thresholds.critical is not None and payload.value >= payload.thresholds.critical:
            severity = "critical"
        elif payload.thresholds.warning is not None and payload.value >= payload.thresholds.warning:
            severity = "warning"
    return {
        "metric": payload.name,
        "value": payload.value,
        "unit": payload.unit,
        "labels": payload.labels,
        "observed_at": payload.observed_at.isoformat() if payload.observed_at else None,
        "thresholds": payload.thresholds.model_dump() if payload.thresholds else None,
        "breached": severity is not None,
        "severity": severity,
    }


class AlertPayload(Payload):
    """An alert raised by monitoring (firing) or cleared by it (resolved)."""

    name: Name
    status: Literal["firing", "resolved"] = "firing"
    severity: Literal["info", "warning", "critical"] = "warning"
    labels: Labels = Field(default_factory=dict)
    annotations: Labels = Field(default_factory=dict)
    fingerprint: Name | None = None
    starts_at: Timestamp | None = None


def alert_fingerprint(name: str, labels: dict[str, str]) -> str:
    """A stable identity for an alert: its name and labels, whatever their order."""
    canonical = json.dumps([name, sorted(labels.items())], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def handle_alert(payload: AlertPayload, envelope: Envelope) -> dict[str, Any]:
    """Acknowledge the alert under a stable fingerprint so later stages can group by it."""
    return {
        "alert": payload.name,
        "fingerprint": payload.fingerprint or alert_fingerprint(payload.name, payload.labels),
        "status": payload.status,
        "severity": payload.severity,
        "labels": payload.labels,
        "annotations": payload.annotations,
        "starts_at": payload.starts_at.isoformat() if payload.starts_at else None,
        "needs_diagnosis": payload.status == "firing",
    }


class DiagnosisPayload(Payload):
    """What a diagnosis service concluded about an alert."""

    alert: Name
    probable_cause: Text
    confidence: float = Field(ge=0.0, le=1.0)
    findings: Annotated[list[Text], Field(max_length=100)] = Field(default_factory=list)
    recommended_action: Name | None = None
    min_confidence: float = Field(0.5, ge=0.0, le=1.0)
    #: The labels of the diagnosed alert (a playbook's target may name one).
    labels: Labels = Field(default_factory=dict)


def handle_diagnosis(payload: DiagnosisPayload, envelope: Envelope) -> dict[str, Any]:
    """Decide whether the diagnosis is confident enough to act on."""
    actionable = (
        payload.recommended_action is not None and payload.confidence >= payload.min_confidence
    )
    return {
        "alert": payload.alert,
        "probable_cause": payload.probable_cause,
        "confidence": payload.confidence,
        "actionable": actionable,
        "recommended_action": payload.recommended_action if actionable else None,
        "labels": payload.labels,
    }


class ActionPayload(Payload):
    """A remediation to execute. Only declared executors run; never an arbitrary command.

    ``http`` calls the target of that name declared in the rules file (``targets:``); the
    message never carries a URL. ``log`` writes the action to the log; ``noop`` records it.
    """

    action: Name
    target: Name
    executor: Literal["noop", "log", "http"] = "noop"
    parameters: Annotated[dict[Name, Any], Field(max_length=64)] = Field(default_factory=dict)
    dry_run: bool = False


def handle_action(payload: ActionPayload, envelope: Envelope) -> dict[str, Any]:
    """Run the action through its executor (``integration.executors``); ``noop`` records what
    would have been done."""
    return run_action(payload, envelope)


class ActionResultPayload(Payload):
    """The outcome of an executed action, reported back to close the loop."""

    action_id: Name
    status: Literal["succeeded", "failed"]
    output: Annotated[dict[Name, Any], Field(max_length=64)] = Field(default_factory=dict)
    duration_ms: float | None = Field(None, ge=0, allow_inf_nan=False)


def handle_action_result(payload: ActionResultPayload, envelope: Envelope) -> dict[str, Any]:
    """Record the outcome; a failed action is what a follow-up diagnosis would look at."""
    return {
        "action_id": payload.action_id,
        "status": payload.status,
        "remediated": payload.status == "succeeded",
    }


class EventPayload(BaseModel):
    """Any JSON object: for producers whose messages have no dedicated type."""

    model_config = ConfigDict(extra="allow")


def handle_event(payload: EventPayload, envelope: Envelope) -> dict[str, Any]:
    """Record the event; its subscribers (if any) do the work."""
    return {"fields": sorted((payload.model_extra or {}).keys())[:50]}


BUILTIN_TYPES = (
    MessageType("metric", MetricPayload, handle_metric, "A metric sample from monitoring."),
    MessageType("alert", AlertPayload, handle_alert, "An alert raised or resolved."),
    MessageType("diagnosis", DiagnosisPayload, handle_diagnosis, "A diagnosis of an alert."),
    # The breaker, rate limit and loop detection are per executor and target name: for http,
    # one declared target (whatever its URL), shared by every worker.
    MessageType("action", ActionPayload, handle_action, "A remediation action to execute.",
                target=lambda p: f"{p.executor}:{p.target}", action_key=lambda p: p.action),
    MessageType("action.result", ActionResultPayload, handle_action_result,
                "The recorded outcome of an executed action."),
    MessageType("event", EventPayload, handle_event, "A generic event with any JSON data."),
)
