"""Result events: the CloudEvent recorded on ``<type>.<outcome>`` when a message ends a step."""

from __future__ import annotations

from typing import Any

from integration.envelope import new_id, utc_now
from integration.status import Status
from integration.store import StatusStore

#: Where the result events of this service come from (CloudEvents ``source``).
EVENT_SOURCE = "/integration/processor"


def result_event(message_id: str, topic: str, outcome: Status, correlationid: str,
                 data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": new_id(),
        "source": EVENT_SOURCE,
        "type": topic,
        "time": utc_now().isoformat(),
        "subject": message_id,
        "datacontenttype": "application/json",
        "correlationid": correlationid,
        "causationid": message_id,
        "data": {"message_id": message_id, "status": str(outcome), **data},
    }


def finish(store: StatusStore, message_id: str, message_type: str, outcome: Status,
           correlationid: str | None, field: str, value: dict[str, Any], *,
           outbox_in: float | None = None, claim: tuple[int, str] | None = None,
           only_if: tuple[str, bytes | None] | None = None) -> dict[str, Any] | None:
    """Record the outcome (``field`` = its result, error or hold) and its event together;
    with ``outbox_in``, park the event for delivery to subscribers; release ``claim``
    (generation, holder). Returns the event, or None when ``only_if`` (key, value) no longer
    held and nothing was written."""
    topic = f"{message_type}.{outcome}"
    event = result_event(message_id, topic, outcome, correlationid or message_id,
                         {field: value})
    detail = {"error": value} if field == "error" else None
    written = store.finish(message_id, outcome, fields={field: value}, topic=topic,
                           event=event, detail=detail, outbox_in=outbox_in, claim=claim,
                           only_if=only_if)
    return event if written else None
