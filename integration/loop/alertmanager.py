"""Alertmanager's webhook format (version 4), its alerts as ``alert`` envelopes, and dedup."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, cast
from urllib.parse import quote

import redis
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from integration.loop.types import alert_fingerprint
from integration.messages.envelope import new_id

#: Alertmanager's ``severity`` label is free text; these spellings map onto the alert payload's
#: three levels, anything else is a warning.
SEVERITIES: dict[str, Literal["info", "warning", "critical"]] = {
    "critical": "critical", "crit": "critical", "page": "critical", "error": "critical",
    "high": "critical", "major": "critical", "emergency": "critical", "fatal": "critical",
    "warning": "warning", "warn": "warning", "medium": "warning", "minor": "warning",
    "info": "info", "informational": "info", "notice": "info", "low": "info", "none": "info",
}
#: The alert payload's bound on a label or annotation value; longer annotations (descriptions,
#: runbooks) are cut rather than costing the whole alert.
MAX_VALUE_LENGTH = 1024
MAX_SOURCE_LENGTH = 512


def _iso_only(value: object) -> object:
    """RFC 3339 strings only: lax parsing would also read a number as a Unix timestamp."""
    if not isinstance(value, str):
        raise ValueError("expected an RFC 3339 date-time string")
    return value


Moment = Annotated[AwareDatetime, BeforeValidator(_iso_only), Field(strict=False)]
StringMap = dict[str, str]


class WebhookAlert(BaseModel):
    """One alert of a notification; Alertmanager sends ``endsAt`` 0001-01-01 while firing."""

    model_config = ConfigDict(extra="allow", strict=True)

    status: Literal["firing", "resolved"]
    labels: StringMap
    annotations: StringMap = Field(default_factory=dict)
    startsAt: Moment
    endsAt: Moment | None = None
    generatorURL: str = ""
    fingerprint: str | None = Field(None, min_length=1, max_length=200)


class AlertmanagerWebhook(BaseModel):
    """The body of an Alertmanager ``webhook_config`` notification (format version 4).

    Unknown fields are ignored, so a newer Alertmanager that adds one is still understood.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    version: Literal["4"]
    receiver: str = Field(max_length=256)
    status: Literal["firing", "resolved"]
    alerts: list[WebhookAlert] = Field(min_length=1)
    groupLabels: StringMap = Field(default_factory=dict)
    commonLabels: StringMap = Field(default_factory=dict)
    commonAnnotations: StringMap = Field(default_factory=dict)
    externalURL: str = ""
    groupKey: str = ""
    truncatedAlerts: int = Field(0, ge=0)


def severity_of(labels: StringMap) -> Literal["info", "warning", "critical"]:
    return SEVERITIES.get(labels.get("severity", "").strip().lower(), "warning")


def source_of(webhook: AlertmanagerWebhook) -> str:
    """Where the alerts came from: the Alertmanager UI's view of the receiver's alerts."""
    base = webhook.externalURL.rstrip("/") or "alertmanager"
    return f"{base}/#/alerts?receiver={quote(webhook.receiver, safe='')}"[:MAX_SOURCE_LENGTH]


def fingerprint_of(alert: WebhookAlert) -> str:
    """Alertmanager's fingerprint (a hash of the labels), or ours when it sent none."""
    return alert.fingerprint or alert_fingerprint(alert.labels.get("alertname", ""), alert.labels)


def _cut(values: StringMap) -> StringMap:
    return {k: v if len(v) <= MAX_VALUE_LENGTH else v[:MAX_VALUE_LENGTH - 1] + "…"
            for k, v in values.items()}


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class AlertMessage:
    """One alert of a notification as a raw ``alert`` envelope, with what dedup needs."""

    fingerprint: str
    status: str
    envelope: dict[str, Any]


def alert_messages(webhook: AlertmanagerWebhook) -> list[AlertMessage]:
    """One ``alert`` envelope per alert of the notification, in order (not yet validated)."""
    source = source_of(webhook)
    messages = []
    for alert in webhook.alerts:
        fingerprint = fingerprint_of(alert)
        data: dict[str, Any] = {
            "name": alert.labels.get("alertname", ""),
            "status": alert.status,
            "severity": severity_of(alert.labels),
            "labels": alert.labels,
            "annotations": _cut(alert.annotations),
            "fingerprint": fingerprint,
            "starts_at": _iso(alert.startsAt),
        }
        envelope = {"id": new_id(), "type": "alert", "source": source,
                    "subject": fingerprint, "data": data}
        messages.append(AlertMessage(fingerprint, alert.status, envelope))
    return messages


# Reserve the key of (fingerprint, status); a new status clears the other one's key, so that
# firing -> resolved -> firing within the window is three messages, not two.
_RESERVE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('DEL', KEYS[2])
  return false
end
return redis.call('GET', KEYS[1])
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_OTHER = {"firing": "resolved", "resolved": "firing"}


class RecentAlerts:
    """Alerts seen in the last ``window`` seconds, by owner, fingerprint and status (Redis).

    ``reserve`` is one atomic ``SET NX EX``: of two notifications carrying the same alert, only
    one starts a message; the other learns the first one's id. An alert whose message could not
    be enqueued is ``release``d, so Alertmanager's retry is not mistaken for a repeat.
    """

    def __init__(self, client: redis.Redis, prefix: str, window: int) -> None:
        self.client = client
        self.prefix = prefix
        self.window = window
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)

    def key(self, owner: str, fingerprint: str, status: str) -> str:
        """The Redis key of one claim (its owner, the alert and its status, hashed)."""
        digest = hashlib.sha256(f"{owner}\x00{fingerprint}\x00{status}".encode()).hexdigest()
        return f"{self.prefix}:alertmanager:{digest}"

    def reserve(self, owner: str, fingerprint: str, status: str, message_id: str) -> str | None:
        """Claim the alert for ``message_id``; or return the id of the message that already has."""
        if self.window <= 0:
            return None
        earlier = self._reserve(keys=[self.key(owner, fingerprint, status),
                                      self.key(owner, fingerprint, _OTHER[status])],
                                args=[message_id, self.window])
        return cast(bytes, earlier).decode() if earlier else None

    def release(self, owner: str, fingerprint: str, status: str, message_id: str) -> None:
        """Forget the claim if it is still ``message_id``'s."""
        if self.window <= 0:
            return
        self._release(keys=[self.key(owner, fingerprint, status)], args=[message_id])
