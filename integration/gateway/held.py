"""``POST /api/v1/messages/<id>/release`` and ``/drop``: an operator's decision on an action
that loop detection holds."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from spectree import Response as Responses
from spectree import SpecTree

from integration.broker.publisher import Outgoing
from integration.events.results import finish
from integration.gateway import schemas
from integration.gateway.auth import current_principal
from integration.gateway.reads import status_url
from integration.gateway.resources import find_record
from integration.gateway.runtime import runtime
from integration.messages.problems import Conflict, NotFound, Unavailable
from integration.messages.status import Status


def register(api: Blueprint, spec: SpecTree) -> None:
    """Add the release and drop views to the API blueprint, documented on ``spec``."""

    @api.post("/messages/<message_id>/release")
    @spec.validate(skip_validation=True, tags=["messages"],
                   resp=Responses(HTTP_202=schemas.AcceptedMessage,
                                  HTTP_404=schemas.ProblemDocument,
                                  HTTP_409=schemas.ProblemDocument))
    def release_message(message_id: str) -> tuple[Response, int]:
        """Release an action held by loop detection: it runs once more, past the guard."""
        principal = current_principal()
        principal.require_manage("actions")
        rt = runtime()
        record = _held(message_id)
        message_id = record["id"]
        moved = rt.store.transition(message_id, Status.QUEUED, allowed_from=(Status.HELD,),
                                    fields={"released_by": principal.subject},
                                    detail={"released_by": principal.subject})
        if moved is None or not moved.applied:
            raise Conflict("The message is no longer held.")
        outcome = rt.publisher.publish(
            [Outgoing(message_id, record["envelope"], record["queue"])])
        if outcome.error is not None:
            rt.store.transition(message_id, Status.HELD, allowed_from=(Status.QUEUED,),
                                detail={"note": "release could not be enqueued"})
            raise Unavailable("The broker is unavailable; the message stays held.",
                              retry_after=rt.settings.retry_after_seconds)
        return jsonify(id=message_id, type=record["type"], status="queued",
                       status_url=status_url(message_id)), 202

    @api.post("/messages/<message_id>/drop")
    @spec.validate(skip_validation=True, tags=["messages"],
                   resp=Responses(HTTP_200=schemas.MessageSummary,
                                  HTTP_404=schemas.ProblemDocument))
    def drop_message(message_id: str) -> Response:
        """Drop an action held by loop detection: it ends dead without running."""
        principal = current_principal()
        principal.require_manage("actions")
        record = _held(message_id)
        message_id = record["id"]
        error = {"type": "Dropped", "message": f"dropped by {principal.subject} while held"}
        # Parked in the outbox at once: the workers' relay delivers the event to the
        # subscribers of <type>.dead (the loop's recording stage, webhooks, ...).
        finish(runtime().store, message_id, record["type"], Status.DEAD,
               record["envelope"].get("correlationid"), "error", error, outbox_in=0.0)
        return jsonify(id=message_id, type=record["type"], status="dead", attempts=0,
                       accepted_at=record["accepted_at"])


def _held(message_id: str) -> dict[str, Any]:
    principal = current_principal()
    record = find_record(message_id,
                         lambda r: principal.may_manage_item("actions", r.get("owner")))
    if record is None:
        raise NotFound("No message with this id.")
    if record["status"] != Status.HELD:
        raise Conflict(f"The message is {record['status']}, not held.")
    return record
