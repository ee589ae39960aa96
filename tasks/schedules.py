"""The firing task beat sends for each due schedule: thin glue around ``integration.schedules``."""

from __future__ import annotations

import time
from datetime import datetime
from functools import cached_property
from typing import Any

import redis
from celery import Task
from celery.exceptions import Reject

from integration import logs
from integration.app import build_submitter, default_registry, default_rights, get_settings
from integration.broker.submission import Submitter
from integration.messages.ownership import scoped
from integration.schedules import firing
from integration.schedules.firing import FIRE_TASK, outcome_of
from integration.schedules.spec import CHANNEL, StoredSchedule, firing_id
from integration.schedules.store import beat_key_prefix, record_refusal
from tasks.app import app
from tasks.observability import metrics
from tasks.processing import OUTAGE_PAUSE_SECONDS, hand_back

log = logs.get_logger("integration.beat")


class FiringTask(Task):
    """One submitter per worker process; in a store or broker outage the firing goes back to
    the broker (the same firing id, so a second try never makes a second message)."""

    @cached_property
    def submitter(self) -> Submitter:
        return build_submitter(get_settings(), origin="beat")


@app.task(name=FIRE_TASK, base=FiringTask, bind=True, acks_late=True,
          reject_on_worker_lost=True, ignore_result=True)
def fire(self: FiringTask, schedule: str, scheduled_at: str) -> dict[str, Any]:
    """Submit one firing of ``schedule`` (its stored JSON) as an ordinary message, if its
    creator's rights still allow it."""
    stored = StoredSchedule.model_validate_json(schedule)
    moment = datetime.fromisoformat(scheduled_at)
    kind = stored.type if stored.type in default_registry() else "unknown"
    message_id = scoped(stored.owner, firing_id(stored.name, moment))
    beat_prefix = beat_key_prefix(get_settings().key_prefix)
    client = self.submitter.store.client
    try:
        sender = firing.sender_of(stored, default_rights())
        if isinstance(sender, str):  # refused: the creator's rights no longer hold
            record_refusal(client, beat_prefix, stored.entry, sender)
            metrics().received.labels(kind, CHANNEL, "refused").inc()
            log.warning("schedule firing refused", schedule=stored.name, owner=stored.owner,
                        message_id=message_id, reason=sender)
            return {"schedule": stored.name, "id": message_id, "outcome": "refused"}
        result = firing.fire(stored, moment, self.submitter.submit_raw, sender)
        outcome = outcome_of(result)
        if outcome in ("accepted", "duplicate"):
            record_refusal(client, beat_prefix, stored.entry, None)
    except redis.RedisError as exc:
        raise hand_back(exc) from None
    metrics().received.labels(kind, CHANNEL, outcome).inc()
    if outcome == "unavailable":
        log.warning("schedule firing unavailable; handed back to the broker",
                    schedule=stored.name, message_id=message_id)
        time.sleep(OUTAGE_PAUSE_SECONDS)
        raise Reject(f"firing unavailable: {result}", requeue=True)
    if outcome == "rejected":
        log.error("schedule firing rejected", schedule=stored.name, message_id=message_id,
                  problem=result.to_dict())
    else:
        log.info("schedule fired", schedule=stored.name, message_id=message_id,
                 outcome=outcome, scheduled_at=scheduled_at)
    return {"schedule": stored.name, "id": message_id, "outcome": outcome}
