"""Built-in message types of the self-healing loop: metric, alert, diagnosis, action, result.

Each handler is a plain function of (payload, envelope) returning the JSON result that is
recorded with the message's status and published on ``<type>.succeeded``. Users replace a
stage by registering their own type (see the docs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from integration.loop.payloads import (
    ActionPayload,
    ActionResultPayload,
    AlertPayload,
    DiagnosisPayload,
    EventPayload,
    MetricPayload,
    alert_fingerprint,
)
from integration.messages.envelope import Envelope
from integration.messages.registry import MessageType


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


def handle_action_result(payload: ActionResultPayload, envelope: Envelope) -> dict[str, Any]:
    """Record the outcome; a failed action is what a follow-up diagnosis would look at."""
    return {
        "action_id": payload.action_id,
        "status": payload.status,
        "remediated": payload.status == "succeeded",
    }


def handle_event(payload: EventPayload, envelope: Envelope) -> dict[str, Any]:
    """Record the event; its subscribers (if any) do the work."""
    return {"fields": sorted((payload.model_extra or {}).keys())[:50]}


#: Runs an action through its executor: the composition root binds the declared targets and
#: the egress of the process (``integration.loop.executors.run_action``).
ActionRunner = Callable[[ActionPayload, Envelope], dict[str, Any]]


def builtin_types(run_action: ActionRunner) -> tuple[MessageType, ...]:
    """The built-in types, the ``action`` handler running actions with ``run_action``."""
    return (
        MessageType("metric", MetricPayload, handle_metric, "A metric sample from monitoring."),
        MessageType("alert", AlertPayload, handle_alert, "An alert raised or resolved."),
        MessageType("diagnosis", DiagnosisPayload, handle_diagnosis,
                    "A diagnosis of an alert."),
        # The breaker, rate limit and loop detection are per executor and target name: for
        # http, one declared target (whatever its URL), shared by every worker.
        MessageType("action", ActionPayload, run_action, "A remediation action to execute.",
                    target=lambda p: f"{p.executor}:{p.target}",
                    action_key=lambda p: p.action),
        MessageType("action.result", ActionResultPayload, handle_action_result,
                    "The recorded outcome of an executed action."),
        MessageType("event", EventPayload, handle_event, "A generic event with any JSON data."),
    )
