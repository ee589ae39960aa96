"""A firing: the task beat sends, the id of each firing (the same for a second beat or a
retry), and the ordinary message it becomes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from integration.broker.submission import Sender
from integration.messages.problems import Conflict, Forbidden, InvalidMessage, Problem
from integration.schedules.spec import CHANNEL, StoredSchedule
from integration.security.rights import CreatorRights

log = logging.getLogger(__name__)


#: The task beat sends for each firing: ``fire(schedule: dict, scheduled_at: str)``.
FIRE_TASK = "integration.schedule.fire"


def sender_of(stored: StoredSchedule, rights: CreatorRights) -> Sender | str:
    """Whom a firing submits as (the creator, with the grants of its roles under the policy
    in force), or why it may not. Schedules of the file and the command line are the
    operator's own (made with access to the store itself), checked by nobody's token."""
    if stored.origin != "api":
        return Sender(stored.owner)
    refusal = rights.to_submit(stored.owner, stored.roles, stored.created_at, stored.type)
    if refusal is not None:
        return refusal
    return Sender(stored.owner, rights.policy.grants(stored.roles or ()))


def fire(stored: StoredSchedule, scheduled_at: datetime,
         submit: Callable[..., Sequence[Any]], sender: Any = None) -> Any:
    """Submit one firing through the ordinary submit path (``Submitter.submit_raw``), as its
    creator (``sender``: its namespace and grants)."""
    [result] = submit([stored.envelope(scheduled_at)], owner=stored.owner, channel=CHANNEL,
                      sender=sender)
    return result


def outcome_of(result: Any) -> str:
    """``accepted``, ``duplicate`` (this firing was already submitted), ``unavailable`` or
    ``rejected`` (the message no longer validates)."""
    if not isinstance(result, Problem):
        return "accepted"
    if isinstance(result, Conflict):
        return "duplicate"
    if isinstance(result, (InvalidMessage, Forbidden)):
        return "rejected"
    return "unavailable"
