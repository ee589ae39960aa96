"""The payloads of the built-in message types (metric, alert, diagnosis, action, result,
event): strict models, no behaviour."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

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



class ActionResultPayload(Payload):
    """The outcome of an executed action, reported back to close the loop."""

    action_id: Name
    status: Literal["succeeded", "failed"]
    output: Annotated[dict[Name, Any], Field(max_length=64)] = Field(default_factory=dict)
    duration_ms: float | None = Field(None, ge=0, allow_inf_nan=False)



class EventPayload(BaseModel):
    """Any JSON object: for producers whose messages have no dedicated type."""

    model_config = ConfigDict(extra="allow")
