"""``/api/v1/dead-letters``: list, show, replay (one or a filtered set) and delete dead letters.

Nested in the API blueprint, so authentication and rate limits apply; every route needs the
``manage:dead_letters`` permission.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from pydantic import BaseModel, ValidationError
from spectree import Response as Responses
from spectree import SpecTree

from integration.gateway import schemas
from integration.gateway.auth import current_principal
from integration.gateway.bodies import json_body
from integration.gateway.runtime import runtime
from integration.problems import Conflict, NotFound, Unavailable, invalid, validation_errors
from integration.store import public

SUMMARY_FIELDS = ("id", "type", "attempts", "owner", "channel", "queue", "accepted_at",
                  "finished_at", "generation", "error")


def _ms(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment else None


def _validated(model: type[BaseModel], data: Any, where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(validation_errors(exc, [where]), f"Invalid {where}.") from None


def create_dead_letters_api(spec: SpecTree) -> Blueprint:
    letters = Blueprint("dead_letters", __name__, url_prefix="/dead-letters")

    @letters.before_request
    def _permission() -> None:
        current_principal().require_manage("dead_letters")

    @letters.get("")
    @spec.validate(query=schemas.DeadLetterQuery, skip_validation=True, tags=["dead letters"],
                   resp=Responses(HTTP_200=schemas.MessagePage, HTTP_403=schemas.ProblemDocument))
    def list_dead_letters() -> Response:
        """Dead letters, newest first, by type and acceptance time, paged by ``cursor``."""
        query = _validated(schemas.DeadLetterQuery, request.args.to_dict(), "query")
        items, cursor = runtime().dead_letters.page(
            type=query.type, since_ms=_ms(query.since), until_ms=_ms(query.until),
            limit=query.limit, cursor=query.cursor)
        summaries = [{k: item[k] for k in SUMMARY_FIELDS if k in item} for item in items]
        return jsonify(items=summaries, next_cursor=cursor)

    @letters.get("/<message_id>")
    @spec.validate(skip_validation=True, tags=["dead letters"],
                   resp=Responses(HTTP_200=schemas.MessageDetail,
                                  HTTP_404=schemas.ProblemDocument))
    def show_dead_letter(message_id: str) -> Response:
        """One dead letter with its envelope, every attempt's error and its history."""
        record = runtime().dead_letters.get(message_id)
        if record is None:
            raise NotFound("No dead letter with this id.")
        return jsonify(public(record))

    @letters.post("/<message_id>/replay")
    @spec.validate(skip_validation=True, tags=["dead letters"],
                   resp=Responses(HTTP_202=schemas.ReplayedMessage,
                                  HTTP_404=schemas.ProblemDocument,
                                  HTTP_409=schemas.ProblemDocument))
    def replay_dead_letter(message_id: str) -> tuple[Response, int]:
        """Re-enqueue one dead letter as a new delivery generation (once, however often asked)."""
        rt = runtime()
        status = rt.store.status_of(message_id)
        if status is None:
            raise NotFound("No dead letter with this id.")
        try:
            replayed = rt.dead_letters.replay([message_id], by=current_principal().subject)
        except Exception:  # noqa: BLE001 - the letter went back to dead; the client may retry
            raise Unavailable("The broker is unavailable; the dead letter stays dead.",
                              retry_after=rt.settings.retry_after_seconds) from None
        if not replayed:
            raise Conflict(f"The message is {status}, not dead: nothing to replay.")
        url = url_for("api.get_message", message_id=message_id)
        return jsonify(id=message_id, generation=replayed[0].generation, status="queued",
                       status_url=url), 202

    @letters.post("/replay")
    @spec.validate(json=schemas.ReplayRequest, skip_validation=True, tags=["dead letters"],
                   resp=Responses(HTTP_202=schemas.ReplayResult, HTTP_422=schemas.ProblemDocument))
    def replay_dead_letters() -> tuple[Response, int]:
        """Re-enqueue every dead letter matching the filters (up to ``limit``)."""
        rt = runtime()
        body = _validated(schemas.ReplayRequest, json_body(allow_empty=True), "body")
        try:
            replayed = rt.dead_letters.replay_matching(
                type=body.type, since_ms=_ms(body.since), until_ms=_ms(body.until),
                limit=body.limit, by=current_principal().subject)
        except Exception:  # noqa: BLE001
            raise Unavailable("The broker is unavailable; the rest stay dead.",
                              retry_after=rt.settings.retry_after_seconds) from None
        return jsonify(replayed=len(replayed), ids=[r.id for r in replayed]), 202

    @letters.delete("/<message_id>")
    @spec.validate(skip_validation=True, tags=["dead letters"],
                   resp=Responses(HTTP_204=None, HTTP_404=schemas.ProblemDocument))
    def delete_dead_letter(message_id: str) -> tuple[str, int]:
        """Remove a dead letter for good."""
        if not runtime().dead_letters.delete(message_id):
            raise NotFound("No dead letter with this id.")
        return "", 204

    return letters
