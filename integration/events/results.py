"""Result events: the CloudEvent recorded on ``<type>.<outcome>`` when a message ends a step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from integration import tracing
from integration.messages.envelope import derived_id, new_id, utc_now
from integration.messages.status import Status
from integration.store.model import InlineDelivery
from integration.store.records import StatusStore

#: Where the result events of this service come from (CloudEvents ``source``).
EVENT_SOURCE = "/integration/processor"


def result_event(message_id: str, topic: str, outcome: Status, correlationid: str,
                 data: dict[str, Any], *, generation: int | None = None) -> dict[str, Any]:
    """The event of ``message_id`` reaching ``outcome``. With its delivery ``generation``,
    its id is derived from the message, the generation and the outcome: a redelivery that
    finishes again makes the same event (and so the same deliveries) rather than another.
    It continues the current trace (the message's processing), as the Distributed Tracing
    extension."""
    event = {
        "specversion": "1.0",
        "id": new_id() if generation is None else derived_id(
            f"{message_id}:{generation}", str(outcome)),
        "source": EVENT_SOURCE,
        "type": topic,
        "time": utc_now().isoformat(),
        "subject": message_id,
        "datacontenttype": "application/json",
        "correlationid": correlationid,
        "causationid": message_id,
        "data": {"message_id": message_id, "status": str(outcome), **data},
    }
    context = tracing.current()
    if context is not None:
        event.update(context.attributes())
    return event


def finish(store: StatusStore, message_id: str, message_type: str, outcome: Status,
           correlationid: str | None, field: str, value: dict[str, Any], *,
           outbox_in: float | None = None, claim: tuple[int, str] | None = None,
           only_if: tuple[str, bytes | None] | None = None,
           event: dict[str, Any] | None = None, inline: Sequence[InlineDelivery] = (),
           owner: str = "direct") -> dict[str, Any] | None:
    """Record the outcome (``field`` = its result, error or hold) and its event together
    (``event`` when the caller made it already, with the deliveries that ran ``inline``);
    with ``outbox_in``, park the event for delivery to subscribers; release ``claim``
    (generation, holder). Returns the event, or None when ``only_if`` (key, value) no longer
    held and nothing was written."""
    topic = f"{message_type}.{outcome}"
    if event is None:
        event = result_event(message_id, topic, outcome, correlationid or message_id,
                             {field: value})
    detail = {"error": value} if field == "error" else None
    written = store.finish(message_id, outcome, fields={field: value}, topic=topic,
                           event=event, detail=detail, outbox_in=outbox_in, claim=claim,
                           only_if=only_if, inline=inline, owner=owner)
    return event if written else None
