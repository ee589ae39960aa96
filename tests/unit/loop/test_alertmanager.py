"""Alertmanager notifications as alert envelopes: pure conversion, tested without services."""

from __future__ import annotations

from typing import Any

import pytest

from integration.loop.alertmanager import MAX_VALUE_LENGTH, AlertmanagerWebhook, alert_messages
from integration.loop.types import AlertPayload, alert_fingerprint
from integration.messages.envelope import Envelope


def webhook(**alert: Any) -> AlertmanagerWebhook:
    return AlertmanagerWebhook.model_validate({
        "version": "4", "receiver": "ops team", "status": "firing",
        "externalURL": "http://am.example.org:9093/",
        "alerts": [{"status": "firing", "labels": {"alertname": "Down"},
                    "startsAt": "2026-01-31T12:00:00Z", "fingerprint": "f1", **alert}]})


@pytest.mark.parametrize("label, severity", [
    ("critical", "critical"), ("Page", "critical"), ("warning", "warning"),
    ("info", "info"), ("none", "info"), ("P3", "warning"), (None, "warning"),
])
def test_severity_label_maps_onto_the_alert_levels(label: str | None, severity: str) -> None:
    """Known spellings map onto info/warning/critical; anything else is a warning."""
    labels = {"alertname": "Down", **({"severity": label} if label else {})}
    [message] = alert_messages(webhook(labels=labels))
    assert message.envelope["data"]["severity"] == severity


def test_every_envelope_is_a_valid_alert() -> None:
    """The converted envelope passes the envelope and alert payload validation unchanged."""
    [message] = alert_messages(webhook(annotations={"description": "x" * 5000}))
    envelope = Envelope.model_validate(message.envelope)
    payload = AlertPayload.model_validate(envelope.data)
    assert len(payload.annotations["description"]) == MAX_VALUE_LENGTH
    assert envelope.source == "http://am.example.org:9093/#/alerts?receiver=ops%20team"
    assert envelope.subject == "f1"


def test_without_a_fingerprint_one_is_derived_from_the_labels() -> None:
    """Older senders omit the fingerprint; the alert's name and labels give a stable one."""
    labels = {"alertname": "Down", "instance": "a"}
    [message] = alert_messages(webhook(labels=labels, fingerprint=None))
    assert message.fingerprint == alert_fingerprint("Down", labels)
