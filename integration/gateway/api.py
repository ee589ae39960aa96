"""``/api/v1``: submit messages (one or a batch), read their status, list them, list types."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from flask import Blueprint, Response, g, jsonify, request, url_for
from flask_jwt_extended import get_jwt, verify_jwt_in_request
from pydantic import ValidationError
from spectree import Response as Responses
from spectree import SpecTree

from integration.broker.publisher import Outgoing
from integration.broker.submission import Accepted, Repeated, Result
from integration.events.results import finish
from integration.gateway import cloudevents, schemas
from integration.gateway.alertmanager import create_alertmanager_api
from integration.gateway.auth import current_principal
from integration.gateway.bodies import json_body, parse_json
from integration.gateway.cloudevents import Mode
from integration.gateway.deadletters import create_dead_letters_api
from integration.gateway.metrics import gateway_metrics
from integration.gateway.requestlog import correlation_given, correlation_id
from integration.gateway.resources import find_record
from integration.gateway.runtime import runtime
from integration.gateway.schedules import create_schedules_api
from integration.gateway.subscriptions import create_subscriptions_api
from integration.messages.problems import (
    Conflict,
    Forbidden,
    InvalidMessage,
    NotFound,
    PayloadTooLarge,
    Problem,
    Unavailable,
    invalid,
    validation_errors,
)
from integration.messages.routing import PROCESS_TASK
from integration.messages.status import Status
from integration.store.codec import public
from integration.store.idempotency import MAX_KEY_LENGTH, Stored, fingerprint, parse_key
from integration.store.model import IdempotentAnswer
from integration.store.trace import trace

#: Fields of a status record that a summary (list item) shows.
SUMMARY_FIELDS = ("id", "type", "status", "attempts", "channel", "queue", "accepted_at",
                  "queued_at", "started_at", "finished_at", "updated_at", "topic")
DETAIL_ORDER = ("id", "type", "status", "attempts", "owner", "channel", "queue",
                "delivered_queue", "task_id", "accepted_at", "queued_at", "started_at",
                "finished_at", "updated_at", "result", "error", "topic")
TOKEN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: Builds the idempotent answer of a single message's 202 (its body and Location).
Answering = Callable[[dict[str, Any], str], IdempotentAnswer]
PROBLEMS = {f"HTTP_{code}": schemas.ProblemDocument
            for code in (400, 401, 403, 413, 415, 422, 429, 503)}
log = logging.getLogger(__name__)


def _status_url(message_id: str) -> str:
    return url_for("api.get_message", message_id=message_id)


#: Characters a message id may hold that a URL path carries as they are.
_PLAIN_ID = re.compile(r"^[A-Za-z0-9._:-]+$")


def _status_urls() -> Callable[[str], str]:
    """``_status_url`` for the many ids of one batch: the route is built once, and ids that
    need no quoting (every valid message id) are appended to it."""
    marker = "0"
    prefix = _status_url(marker)[:-len(marker)]
    return lambda message_id: (prefix + message_id if _PLAIN_ID.match(message_id)
                               else _status_url(message_id))


def _item(index: int, result: Result, status_url: Callable[[str], str]) -> dict[str, Any]:
    if isinstance(result, Accepted):
        return {"index": index, "status": 202, "id": result.id,
                "status_url": status_url(result.id)}
    return {"index": index, "status": result.status, "problem": result.to_dict()}


def create_api(spec: SpecTree) -> Blueprint:
    """The ``/api/v1`` blueprint; views are documented on ``spec`` (one per app)."""
    api = Blueprint("api", __name__, url_prefix="/api/v1")

    @api.before_request
    def _authenticate() -> None:
        try:
            get_jwt()  # already verified for this request (by the rate limiter's key)
        except RuntimeError:
            verify_jwt_in_request()
        current_principal().require_some_grant()

    @api.post("/messages")
    @spec.validate(json=schemas.SubmitRequest, skip_validation=True, tags=["messages"],
                   resp=Responses(HTTP_202=schemas.SubmitResponse, HTTP_409=schemas.ProblemDocument,
                                  **PROBLEMS))
    def submit_messages() -> tuple[Response, int] | Response:
        """Submit one message (202 with its id) or a batch (202 with one result per item).

        CloudEvents 1.0 over HTTP is understood in its three modes: structured
        (``Content-Type: application/cloudevents+json``, one event), batched
        (``application/cloudevents-batch+json``, a JSON array, one result per event) and
        binary (``ce-specversion``, ``ce-id``, ``ce-source``, ``ce-type`` and other ``ce-*``
        attribute headers, the JSON data as the body).

        With an ``Idempotency-Key`` header, a repeat of the same request is answered as the
        first one was and enqueues nothing.
        """
        mode = cloudevents.request_mode()
        try:
            return _submit_with_key(mode, cloudevents.read(mode))
        except Problem as problem:
            if not g.get("received_counted"):  # refused before any message was looked at
                gateway_metrics().count(None, problem, channel=mode.channel)
            raise

    def _submit_with_key(mode: Mode, raw: bytes) -> tuple[Response, int]:
        header = request.headers.get("Idempotency-Key")
        if header is None:
            return _submit(mode, _body(mode, raw))
        key = parse_key(header)
        if key is None:
            raise invalid([{"loc": ["header", "Idempotency-Key"], "type": "string_type",
                            "msg": f"1 to {MAX_KEY_LENGTH} printable characters"}],
                          "Invalid Idempotency-Key.")
        rt, owner = runtime(), current_principal().subject
        digest = fingerprint(cloudevents.identity(mode, raw))
        keys = rt.idempotency
        body = _body(mode, raw)
        if rt.submitter.completes_answers and not isinstance(body, list):
            # One message on the one-transaction path: the transaction that enqueues it takes
            # the key, or finds the earlier answer and enqueues nothing. No reservation round
            # trip, and no "pending" key left behind by a gateway that died mid-request.
            def claiming(reply: dict[str, Any], location: str) -> IdempotentAnswer:
                return keys.answer(owner, key, Stored("done", digest, 202, reply, location),
                                   claim=True)

            try:
                return _submit(mode, body, claiming)
            except Repeated as repeated:
                return _repeat(Stored(**json.loads(repeated.stored)), digest, mode)
        try:
            earlier = keys.reserve(owner, key, digest)
        except redis.RedisError:
            raise Unavailable("The status store is unavailable.",
                              retry_after=rt.settings.retry_after_seconds) from None
        if earlier is not None:
            return _repeat(earlier, digest, mode)

        def answer(reply: dict[str, Any], location: str) -> IdempotentAnswer:
            return keys.answer(owner, key, Stored("done", digest, 202, reply, location))

        try:
            response, status = _submit(mode, body, answer)
        except BaseException:
            # Free the key only if nothing was enqueued: a repeat would enqueue it again.
            if not g.get("enqueued"):
                _settle_key(lambda: keys.release(owner, key))
            raise
        if not g.get("answer_stored"):
            # What was enqueued stays answered as it was even if the store fails now: the
            # key then stays pending until it expires, and a repeat enqueues nothing.
            _settle_key(lambda: keys.complete(owner, key, Stored(
                "done", digest, status, response.get_json(), response.headers.get("Location"))))
        return response, status

    def _repeat(earlier: Stored, digest: str, mode: Mode) -> tuple[Response, int]:
        if earlier.fingerprint != digest:
            raise invalid([{"loc": ["header", "Idempotency-Key"], "type": "key_reused",
                            "msg": "this key was used with a different body"}],
                          "The Idempotency-Key was already used for another request.")
        if earlier.state == "pending":
            raise Conflict("A request with this Idempotency-Key is still being handled.")
        gateway_metrics().count(None, Conflict(), channel=mode.channel)
        response = jsonify(earlier.body)
        if earlier.location:
            response.headers["Location"] = earlier.location
        response.headers["Idempotent-Replayed"] = "true"
        return response, earlier.status

    def _body(mode: Mode, raw: bytes) -> Any:
        """The request's message (a JSON object) or batch (a JSON array), per its mode."""
        body = cloudevents.binary_event(raw) if mode is Mode.BINARY else parse_json(raw)
        if mode is Mode.BATCHED and not isinstance(body, list):
            raise invalid([{"loc": [], "msg": "a batch is a JSON array of events",
                            "type": "list_type"}], "The batch is not a JSON array.")
        if mode is Mode.STRUCTURED and isinstance(body, list):
            raise invalid([{"loc": [], "msg": "structured mode carries one event; send a batch "
                            f"as {cloudevents.BATCHED}", "type": "dict_type"}],
                          "A structured-mode body is one event.")
        return body

    def _submit(mode: Mode, body: Any, answer: Answering | None = None
                ) -> tuple[Response, int]:
        if isinstance(body, list):
            return _submit_batch(mode, body)
        rt = runtime()
        principal = current_principal()
        try:
            event = body if mode is Mode.PLAIN else cloudevents.checked(body)
            envelope = rt.submitter.parse(event, correlation_id=correlation_id(),
                                          sender=principal.sender,
                                          correlation_given=correlation_given())
        except Problem as problem:
            gateway_metrics().count(body, problem, channel=mode.channel)
            if mode is Mode.BINARY and isinstance(problem, InvalidMessage):
                raise cloudevents.in_headers(problem, body) from None
            raise
        url = _status_url(envelope.id)
        reply = {"id": envelope.id, "type": envelope.type, "status": "queued",
                 "status_url": url}
        # The idempotency key's answer rides in the message's own transaction, if it can.
        stored = answer(reply, url) if answer and rt.submitter.completes_answers else None
        [result] = rt.submitter.submit([envelope], owner=principal.subject,
                                       channel=mode.channel, answer=stored)
        g.enqueued = isinstance(result, Accepted)
        if isinstance(result, Repeated):
            raise result  # the caller answers as the earlier request was answered
        gateway_metrics().count(body, result, channel=mode.channel)
        if isinstance(result, Problem):
            raise result
        g.answer_stored = stored is not None
        response = jsonify(reply)
        response.headers["Location"] = url
        return response, 202

    def _submit_batch(mode: Mode, items: list[Any]) -> tuple[Response, int]:
        rt = runtime()
        if not items:
            raise invalid([{"loc": [], "msg": "the batch is empty", "type": "too_short"}],
                          "An empty batch has nothing to submit.")
        if len(items) > rt.settings.batch_limit:
            raise PayloadTooLarge(f"A batch holds at most {rt.settings.batch_limit} messages.")
        principal = current_principal()
        if mode is Mode.BATCHED:
            results = cloudevents.submit_events(rt.submitter, items, owner=principal.subject,
                                                may_submit=principal.grants.may_submit,
                                                correlation_id=correlation_id(),
                                                sender=principal.sender,
                                                correlation_given=correlation_given())
        else:
            results = rt.submitter.submit_raw(items, owner=principal.subject,
                                              channel=mode.channel,
                                              correlation_id=correlation_id(),
                                              sender=principal.sender,
                                              correlation_given=correlation_given())
        accepted = sum(1 for r in results if isinstance(r, Accepted))
        g.enqueued = accepted > 0
        gateway_metrics().count_all(items, results, channel=mode.channel)
        status_url = _status_urls()
        report = [_item(i, r, status_url) for i, r in enumerate(results)]
        if accepted:
            return jsonify(accepted=accepted, rejected=len(items) - accepted, results=report), 202
        if any(isinstance(r, Unavailable) for r in results):
            raise Unavailable("No message of the batch could be enqueued.",
                              retry_after=rt.settings.retry_after_seconds, results=report)
        raise InvalidMessage("No message of the batch was accepted.", results=report)

    @api.get("/messages/<message_id>")
    @spec.validate(resp=Responses(HTTP_200=schemas.MessageDetail,
                                  HTTP_404=schemas.ProblemDocument), skip_validation=True,
                   tags=["messages"])
    def get_message(message_id: str) -> Response:
        """A message's status, attempts, timestamps, result or error, and history, by its id or
        by the id its submitter gave."""
        _read_scope()
        principal = current_principal()
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
        _read_scope()
        principal = current_principal()
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
        scope = _read_scope()
        items, cursor = rt.store.list(type=query.type,
                                      status=str(query.status) if query.status else None,
                                      owner=scope_owner() if scope == "own" else None,
                                      limit=min(query.limit, rt.settings.list_page_limit),
                                      cursor=query.cursor)
        summaries = [{k: item[k] for k in SUMMARY_FIELDS if k in item} for item in items]
        return jsonify(items=summaries, next_cursor=cursor)

    @api.get("/types")
    @spec.validate(resp=Responses(HTTP_200=schemas.TypeList), skip_validation=True,
                   tags=["types"])
    def list_types() -> Response:
        """Registered message types, their queues and payload JSON Schemas."""
        return jsonify(task=PROCESS_TASK, types=[t.describe() for t in runtime().registry])

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
                       status_url=_status_url(message_id)), 202

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

    @api.get("/breakers")
    @spec.validate(skip_validation=True, tags=["resilience"],
                   resp=Responses(HTTP_200=schemas.BreakerList, HTTP_403=schemas.ProblemDocument))
    def list_breakers() -> Response:
        """Every downstream target's breaker: state, failures, and when it may close."""
        principal = current_principal()
        if principal.grants.read != "any" and not principal.grants.may_manage("breakers"):
            raise Forbidden("manage:breakers")
        return jsonify(breakers=runtime().guards.describe_breakers())

    @api.delete("/tokens/<jti>")
    @spec.validate(resp=Responses(HTTP_204=None, HTTP_403=schemas.ProblemDocument),
                   skip_validation=True, tags=["tokens"])
    def revoke_token(jti: str) -> tuple[str, int]:
        """Revoke a token by its ``jti``: it is refused from now until it would have expired."""
        current_principal().require_manage("tokens")
        if not TOKEN_ID.match(jti):
            raise invalid([{"loc": ["path", "jti"], "msg": "not a token id",
                            "type": "string_pattern_mismatch"}], "Invalid token id.")
        runtime().revocations.revoke(jti)
        return "", 204

    @api.post("/tokens/revocations")
    @spec.validate(json=schemas.SubjectRevocation, skip_validation=True, tags=["tokens"],
                   resp=Responses(HTTP_200=schemas.RevokedSubject,
                                  HTTP_403=schemas.ProblemDocument,
                                  HTTP_422=schemas.ProblemDocument))
    def revoke_subject() -> Response:
        """Revoke every token of a subject issued at or before ``before`` (now), with or
        without a ``jti``; the schedules and subscriptions it made before then stop too."""
        current_principal().require_manage("tokens")
        rt = runtime()
        try:
            body = schemas.SubjectRevocation.model_validate(json_body())
        except ValidationError as exc:
            raise invalid(validation_errors(exc, ["body"]), "Invalid revocation.") from None
        at = body.before.timestamp() if body.before is not None else None
        if at is not None and at > time.time() + rt.verification.leeway:
            raise invalid([{"loc": ["body", "before"], "type": "future",
                            "msg": "a revocation covers tokens already issued, not later ones"}],
                          "Invalid revocation.")
        moment = rt.revocations.revoke_subject(body.subject, at)
        return jsonify(subject=body.subject, revoked_before=datetime.fromtimestamp(
            moment, UTC).isoformat().replace("+00:00", "Z"))

    api.register_blueprint(create_dead_letters_api(spec))
    api.register_blueprint(create_subscriptions_api(spec))
    api.register_blueprint(create_alertmanager_api(spec))
    api.register_blueprint(create_schedules_api(spec))
    return api


def _settle_key(change: Callable[[], None]) -> None:
    """Complete or release an idempotency key; a store failure is logged, never the answer."""
    try:
        change()
    except Exception:  # noqa: BLE001 - the store failing now changes nothing enqueued
        log.warning("idempotency key left pending (it expires with its TTL)", exc_info=True)


def _held(message_id: str) -> dict[str, Any]:
    principal = current_principal()
    record = find_record(message_id,
                         lambda r: principal.may_manage_item("actions", r.get("owner")))
    if record is None:
        raise NotFound("No message with this id.")
    if record["status"] != Status.HELD:
        raise Conflict(f"The message is {record['status']}, not held.")
    return record


def _read_scope() -> str:
    """The caller's read scope; 403 when it may read no message at all."""
    scope = current_principal().grants.read
    if scope == "none":
        raise Forbidden("read:messages")
    return scope


def scope_owner() -> str:
    return current_principal().subject
