"""``GET /api/v1/messages``, ``/messages/<id>`` and ``/messages/<id>/trace``: what a caller
may read of messages, and the status URL every answer about a message links to."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from pydantic import ValidationError
from spectree import Response as Responses
from spectree import SpecTree

from integration.gateway import schemas
from integration.gateway.auth import Principal, current_principal
from integration.gateway.resources import find_record
from integration.gateway.runtime import runtime
from integration.messages.problems import Forbidden, NotFound, invalid, validation_errors
from integration.store.codec import public
from integration.store.trace import trace

#: Fields of a status record that a summary (list item) shows.
SUMMARY_FIELDS = ("id", "type", "status", "attempts", "channel", "queue", "accepted_at",
                  "queued_at", "started_at", "finished_at", "updated_at", "topic")
DETAIL_ORDER = ("id", "type", "status", "attempts", "owner", "channel", "queue",
                "delivered_queue", "task_id", "accepted_at", "queued_at", "started_at",
                "finished_at", "updated_at", "result", "error", "topic")
#: The endpoint of a message's status (the views below live on the API blueprint).
STATUS_ENDPOINT = "api.get_message"
#: Characters a message id may hold that a URL path carries as they are.
_PLAIN_ID = re.compile(r"^[A-Za-z0-9._:-]+$")


def status_url(message_id: str) -> str:
    """Where a message's status is read."""
    return url_for(STATUS_ENDPOINT, message_id=message_id)


def status_urls() -> Callable[[str], str]:
    """``status_url`` for the many ids of one batch: the route is built once, and ids that
    need no quoting (every valid message id) are appended to it."""
    marker = "0"
    prefix = status_url(marker)[:-len(marker)]
    return lambda message_id: (prefix + message_id if _PLAIN_ID.match(message_id)
                               else status_url(message_id))


def register(api: Blueprint, spec: SpecTree) -> None:
    """Add the message reading views to the API blueprint, documented on ``spec``."""

    @api.get("/messages/<message_id>")
    @spec.validate(resp=Responses(HTTP_200=schemas.MessageDetail,
                                  HTTP_404=schemas.ProblemDocument), skip_validation=True,
                   tags=["messages"])
    def get_message(message_id: str) -> Response:
        """A message's status, attempts, timestamps, result or error, and history, by its id or
        by the id its submitter gave."""
        principal = _reader()
        # Another owner's message is indistinguishable from one that does not exist.
        record = find_record(message_id, lambda r: principal.may_read(r.get("owner")))
        if record is None:
            raise NotFound("No message with this id (or its status has expired).")
        record = public(record)
        ordered = {k: record.pop(k) for k in DETAIL_ORDER if k in record}
        return jsonify({**ordered, **record})

    @api.get("/messages/<message_id>/trace")
    @spec.validate(resp=Responses(HTTP_200=schemas.Trace, HTTP_404=schemas.ProblemDocument),
                   skip_validation=True, tags=["messages"])
    def trace_message(message_id: str) -> Response:
        """The message's timeline (each step, with the time since the previous one) and the
        messages it caused, recursively: one call shows a whole chain."""
        principal = _reader()
        record = find_record(message_id, lambda r: principal.may_read(r.get("owner")))
        # Messages of the chain the reader may not read are left out, with what they caused.
        found = trace(runtime().store, record["id"], visible=principal.may_read) \
            if record is not None else None
        if found is None:
            raise NotFound("No message with this id (or its status has expired).")
        return jsonify(found)

    @api.get("/messages")
    @spec.validate(query=schemas.ListQuery, resp=Responses(HTTP_200=schemas.MessagePage,
                                                           HTTP_422=schemas.ProblemDocument),
                   skip_validation=True, tags=["messages"])
    def list_messages() -> Response:
        """Recent messages, newest first, filtered by type and status, paged by ``cursor``."""
        rt = runtime()
        try:
            query = schemas.ListQuery.model_validate(request.args.to_dict())
        except ValidationError as exc:
            raise invalid(validation_errors(exc, ["query"]), "Invalid query.") from None
        principal = _reader()
        items, cursor = rt.store.list(type=query.type,
                                      status=str(query.status) if query.status else None,
                                      owner=principal.subject
                                      if principal.grants.read == "own" else None,
                                      limit=min(query.limit, rt.settings.list_page_limit),
                                      cursor=query.cursor)
        return jsonify(items=[_summary(item) for item in items], next_cursor=cursor)


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    """A list item: the summary fields, and the ``source`` its sender gave."""
    summary = {k: record[k] for k in SUMMARY_FIELDS if k in record}
    envelope = record.get("envelope")
    if isinstance(envelope, dict) and envelope.get("source"):
        summary["source"] = envelope["source"]
    return summary


def _reader() -> Principal:
    """The caller; 403 when it may read no message at all."""
    principal = current_principal()
    if principal.grants.read == "none":
        raise Forbidden("read:messages")
    return principal
