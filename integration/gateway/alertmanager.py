"""``POST /api/v1/alertmanager``: Alertmanager's webhook notifications, one ``alert`` each.

Nested in the API blueprint, so the bearer token and the rate limit apply as everywhere; the
token's roles must grant ``submit:alert``. Each alert of a notification becomes one message,
unless the same alert (fingerprint and status) was received within
``INTEGRATION_ALERTMANAGER_DEDUP_SECONDS``: Alertmanager re-sends a whole group on every
change and every ``repeat_interval``, and a repeat must not start the loop again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from flask import Blueprint, Response, jsonify
from pydantic import ValidationError
from spectree import Response as Responses
from spectree import SpecTree

from integration import logs
from integration.broker.submission import Accepted, Unreplicated
from integration.gateway import schemas
from integration.gateway.auth import current_principal
from integration.gateway.bodies import parse_json, read_body
from integration.gateway.metrics import Received, receiving
from integration.gateway.reads import status_url
from integration.gateway.requestlog import correlation_id
from integration.gateway.runtime import runtime
from integration.loop.alertmanager import (
    AlertmanagerWebhook,
    AlertMessage,
    RecentAlerts,
    alert_messages,
)
from integration.messages.envelope import Envelope
from integration.messages.problems import (
    Conflict,
    Forbidden,
    InvalidMessage,
    PayloadTooLarge,
    Problem,
    Unavailable,
    invalid,
    validation_errors,
)

CHANNEL = "alertmanager"
ALERT = {"type": "alert"}  # what the received-messages counter labels each alert with
log = logs.get_logger("integration.gateway.alertmanager")


@dataclass(frozen=True)
class Duplicate:
    """The alert was received within the dedup window; ``id`` is the earlier message."""

    id: str


Outcome = Accepted | Duplicate | Problem


def _item(index: int, message: AlertMessage, outcome: Outcome) -> dict[str, Any]:
    item: dict[str, Any] = {"index": index, "fingerprint": message.fingerprint}
    if isinstance(outcome, Problem):
        return {**item, "status": outcome.status, "problem": outcome.to_dict()}
    url = status_url(outcome.id)
    return {**item, "status": 202 if isinstance(outcome, Accepted) else 200, "id": outcome.id,
            "status_url": url, "duplicate": isinstance(outcome, Duplicate)}


def create_alertmanager_api(spec: SpecTree) -> Blueprint:
    adapter = Blueprint("alertmanager", __name__)

    @adapter.post("/alertmanager")
    @spec.validate(json=AlertmanagerWebhook, skip_validation=True, tags=["adapters"],
                   resp=Responses(HTTP_202=schemas.AlertmanagerResponse, **schemas.SUBMIT_PROBLEMS))
    def receive_alertmanager() -> tuple[Response, int]:
        """Receive an Alertmanager webhook notification (``version`` 4): one ``alert`` message
        per alert, or ``duplicate`` with the earlier message's id for an alert already received
        with the same status within the dedup window.

        Point a ``webhook_configs`` receiver here with ``send_resolved: true`` and a service
        token in ``http_config.authorization``. When an alert could not be enqueued the answer
        is 503, so Alertmanager retries; the alerts that were enqueued are then duplicates.
        """
        with receiving(CHANNEL, refused=ALERT) as received:
            return _receive(received)

    return adapter


def _receive(received: Received) -> tuple[Response, int]:
    rt, principal = runtime(), current_principal()
    if not principal.grants.may_submit("alert"):
        raise Forbidden("submit:alert")
    body = parse_json(read_body())
    too_big = rt.submitter.limits.errors(body)
    if too_big:
        raise invalid(too_big, "The notification exceeds a size, depth or number limit, or "
                      "holds text that is not valid Unicode.")
    try:
        webhook = AlertmanagerWebhook.model_validate(body)
    except ValidationError as exc:
        raise invalid(validation_errors(exc), "The body is not an Alertmanager webhook "
                      "notification (version 4).") from None
    if len(webhook.alerts) > rt.settings.batch_limit:
        raise PayloadTooLarge(f"A notification holds at most {rt.settings.batch_limit} alerts "
                              "(set max_alerts in the webhook_config).")
    messages = alert_messages(webhook)
    outcomes = _submit(messages, principal.subject)

    for outcome in outcomes:
        received.count(ALERT, Conflict() if isinstance(outcome, Duplicate) else outcome)
    report = [_item(i, m, o) for i, (m, o) in enumerate(zip(messages, outcomes, strict=True))]
    accepted = sum(isinstance(o, Accepted) for o in outcomes)
    duplicates = sum(isinstance(o, Duplicate) for o in outcomes)
    log.info("alertmanager notification", receiver=webhook.receiver, alerts=len(messages),
             accepted=accepted, duplicates=duplicates, truncated=webhook.truncatedAlerts)
    if any(isinstance(o, Unavailable) for o in outcomes):
        # Alertmanager retries a 5xx; what was enqueued now is a duplicate then, not a repeat.
        raise Unavailable("Not every alert could be enqueued; retry the notification.",
                          retry_after=rt.settings.retry_after_seconds, results=report)
    if not accepted and not duplicates:
        raise InvalidMessage("No alert of the notification was accepted.", results=report)
    return jsonify(accepted=accepted, duplicates=duplicates,
                   rejected=len(messages) - accepted - duplicates, results=report), 202


def _submit(messages: list[AlertMessage], owner: str) -> list[Outcome]:
    """Validate each alert, claim it against the dedup window, enqueue the new ones; a claim
    whose message was not enqueued is released again."""
    rt = runtime()
    recent = RecentAlerts(rt.store.client, rt.settings.key_prefix,
                          rt.settings.alertmanager_dedup_seconds)
    claimed: list[tuple[int, Envelope]] = []
    correlation = correlation_id()

    def parse(index: int, message: AlertMessage) -> Envelope | Duplicate:
        envelope = rt.submitter.parse(message.envelope, loc=["alerts", index],
                                      correlation_id=correlation)
        earlier = recent.reserve(owner, message.fingerprint, message.status, envelope.id)
        if earlier is not None:
            return Duplicate(earlier)
        claimed.append((index, envelope))
        return envelope

    try:
        outcomes = rt.submitter.submit_each(messages, parse, owner=owner, channel=CHANNEL)
    except redis.RedisError:
        _release(recent, owner, messages, claimed)
        raise Unavailable("The status store is unavailable.",
                          retry_after=rt.settings.retry_after_seconds) from None
    # An enqueued alert keeps its claim even if not known to be replicated (a 503): the
    # retry sees it as a duplicate.
    _release(recent, owner, messages, [(i, e) for i, e in claimed
                                       if not isinstance(outcomes[i], Accepted | Unreplicated)])
    return outcomes


def _release(recent: RecentAlerts, owner: str, messages: list[AlertMessage],
             claimed: list[tuple[int, Envelope]]) -> None:
    for index, envelope in claimed:
        try:
            recent.release(owner, messages[index].fingerprint, messages[index].status,
                           envelope.id)
        except redis.RedisError:  # the claim expires with the window
            log.warning("could not release a dedup claim", message_id=envelope.id)
