"""``/api/v1/dead-letters``: list, show, replay (one or a filtered set) and delete dead letters.

Nested in the API blueprint, so authentication and rate limits apply; every route needs the
``manage:dead_letters`` permission.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ValidationError
from spectree import Response as Responses
from spectree import SpecTree

from integration.gateway import schemas
from integration.gateway.auth import current_principal
from integration.gateway.bodies import json_body
from integration.gateway.reads import status_url
from integration.gateway.resources import find_record
from integration.gateway.runtime import runtime
from integration.messages.problems import (
    Conflict,
    NotFound,
    Unavailable,
    invalid,
    validation_errors,
)
from integration.store.codec import public

SUMMARY_FIELDS = ("id", "type", "status", "attempts", "owner", "channel", "queue",
                  "accepted_at", "finished_at", "generation", "error")


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
            limit=query.limit, cursor=query.cursor, owner=_only_owner())
        summaries = [{k: v for k, v in public(item).items() if k in SUMMARY_FIELDS}
                     for item in items]
        return jsonify(items=summaries, next_cursor=cursor)

    @letters.get("/<message_id>")
    @spec.validate(skip_validation=True, tags=["dead letters"],
                   resp=Responses(HTTP_200=schemas.MessageDetail,
                                  HTTP_404=schemas.ProblemDocument))
    def show_dead_letter(message_id: str) -> Response:
        """One dead letter with its envelope, every attempt's error and its history."""
        return jsonify(public(_letter(message_id)))

    @letters.post("/<message_id>/replay")
    @spec.validate(skip_validation=True, tags=["dead letters"],
                   resp=Responses(HTTP_202=schemas.ReplayedMessage,
                                  HTTP_404=schemas.ProblemDocument,
                                  HTTP_409=schemas.ProblemDocument))
    def replay_dead_letter(message_id: str) -> tuple[Response, int]:
        """Re-enqueue one dead letter as a new delivery generation (once, however often asked)."""
        rt = runtime()
        record = _mine(message_id)
        if record is None:
            raise NotFound("No dead letter with this id.")
        message_id, status = record["id"], record["status"]
        try:
            replayed = rt.dead_letters.replay([message_id], by=current_principal().subject)
        except Exception:  # noqa: BLE001 - the letter went back to dead; the client may retry
            raise Unavailable("The broker is unavailable; the dead letter stays dead.",
                              retry_after=rt.settings.retry_after_seconds) from None
        if not replayed:
            raise Conflict(f"The message is {status}, not dead: nothing to replay.")
        url = status_url(message_id)
        return jsonify(id=message_id, generation=replayed[0].generation, status="queued",
                       status_url=url), 202

    @letters.post("/replay")
    @spec.validate(json=schemas.ReplayRequest, skip_validation=True, tags=["dead letters"],
                   resp=Responses(HTTP_202=schemas.ReplayResult, HTTP_422=schemas.ProblemDocument))
    def replay_dead_letters() -> tuple[Response, int]:
        """Re-enqueue the dead letters matching a filter (``type``, ``since``, ``until``), or
        every one with ``"all": true``, up to ``limit``; without either, 422."""
        rt = runtime()
        body = _validated(schemas.ReplayRequest, json_body(allow_empty=True), "body")
        try:
            replayed = rt.dead_letters.replay_matching(
                type=body.type, since_ms=_ms(body.since), until_ms=_ms(body.until),
                limit=body.limit, by=current_principal().subject, owner=_only_owner())
        except Exception:  # noqa: BLE001
            raise Unavailable("The broker is unavailable; the rest stay dead.",
                              retry_after=rt.settings.retry_after_seconds) from None
        return jsonify(replayed=len(replayed), ids=[r.id for r in replayed]), 202

    @letters.delete("/<message_id>")
    @spec.validate(skip_validation=True, tags=["dead letters"],
                   resp=Responses(HTTP_204=None, HTTP_404=schemas.ProblemDocument))
    def delete_dead_letter(message_id: str) -> tuple[str, int]:
        """Remove a dead letter for good."""
        if not runtime().dead_letters.delete(_letter(message_id)["id"]):
            raise NotFound("No dead letter with this id.")
        return "", 204

    return letters


def _only_owner() -> str | None:
    """The caller's subject when it may manage only its own dead letters."""
    principal = current_principal()
    return None if principal.grants.manage_scope("dead_letters") == "any" \
        else principal.subject


def _mine(message_id: str) -> dict[str, Any] | None:
    """The message ``message_id`` names for the caller, if its dead letters are the
    caller's to manage (another owner's look exactly like missing ones)."""
    principal = current_principal()
    return find_record(message_id,
                       lambda r: principal.may_manage_item("dead_letters", r.get("owner")))


def _letter(message_id: str) -> dict[str, Any]:
    record = _mine(message_id)
    letter = runtime().dead_letters.get(record["id"]) if record is not None else None
    if letter is None:
        raise NotFound("No dead letter with this id.")
    return letter
