"""``POST /api/v1/messages``: one message or a batch, as plain JSON or a CloudEvent in any of
the three modes of its HTTP binding, under an optional ``Idempotency-Key``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, jsonify
from spectree import Response as Responses
from spectree import SpecTree

from integration import tracing
from integration.broker.submission import (
    Accepted,
    RateLimited,
    Repeated,
    Result,
    Uncertain,
    Unreplicated,
    hit_counted,
)
from integration.gateway import cloudevents, schemas
from integration.gateway.auth import current_principal
from integration.gateway.bodies import parse_json
from integration.gateway.cloudevents import Mode
from integration.gateway.idempotency import Attempt, Reply, RequestKey, submit_once
from integration.gateway.limits import SubmitCharge, submit_charge
from integration.gateway.metrics import Received, receiving
from integration.gateway.reads import status_url, status_urls
from integration.gateway.requestlog import correlation_given, correlation_id, trace_context
from integration.gateway.runtime import runtime
from integration.messages.problems import (
    InvalidMessage,
    PayloadTooLarge,
    Problem,
    Unavailable,
    invalid,
)


def register(api: Blueprint, spec: SpecTree) -> None:
    """Add the submitting view to the API blueprint, documented on ``spec``."""

    @api.post("/messages")
    @spec.validate(json=schemas.SubmitRequest, skip_validation=True, tags=["messages"],
                   resp=Responses(HTTP_202=schemas.SubmitResponse, HTTP_409=schemas.ProblemDocument,
                                  **schemas.SUBMIT_PROBLEMS))
    def submit_messages() -> Reply:
        """Submit one message (202 with its id) or a batch (202 with one result per item).

        CloudEvents 1.0 over HTTP is understood in its three modes: structured
        (``Content-Type: application/cloudevents+json``, one event), batched
        (``application/cloudevents-batch+json``, a JSON array, one result per event) and
        binary (``ce-specversion``, ``ce-id``, ``ce-source``, ``ce-type`` and other ``ce-*``
        attribute headers, the JSON data as the body).

        With an ``Idempotency-Key`` header, a repeat of the same request is answered as the
        first one was and enqueues nothing.

        A W3C ``traceparent`` (and ``tracestate``) header is carried on with each message as
        its Distributed Tracing extension (an invalid one is ignored); a message that has
        its own ``traceparent`` attribute keeps it (an invalid one is a 422).
        """
        charge = submit_charge()
        try:
            mode = cloudevents.request_mode()
            with receiving(mode.channel) as received, tracing.span(
                    "submit", "server", trace_context(),
                    {"http.request.method": "POST", "http.route": "/api/v1/messages",
                     "integration.channel": mode.channel}):
                return _submit_request(mode, received, charge)
        except Exception:
            # A request refused before its message's transaction counted its hit is
            # counted now, as Flask-Limiter would have counted it first: over the limit,
            # the answer is the 429 it would have had.
            if charge is not None:
                charge.charge()
            raise


def _submit_request(mode: Mode, received: Received, charge: SubmitCharge | None) -> Reply:
    rt, owner = runtime(), current_principal().subject
    raw = cloudevents.read(mode)
    key = RequestKey.of_request(rt.idempotency, owner, lambda: cloudevents.identity(mode, raw),
                                rt.settings.retry_after_seconds)
    body = _body(mode, raw)
    if isinstance(body, list):
        if charge is not None:
            charge.charge()  # a batch is counted before its messages, as any request is
        return submit_once(key, lambda attempt: _submit_batch(mode, body, attempt, received),
                           in_transaction=False, received=received)
    return submit_once(key, lambda attempt: _submit(mode, body, attempt, received, charge),
                       in_transaction=rt.submitter.completes_answers, received=received)


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


def _submit(mode: Mode, body: Any, attempt: Attempt, received: Received,
            charge: SubmitCharge | None) -> Reply:
    """One message: 202 with its status URL, or its problem raised. ``charge``: the
    request's rate-limit hit, counted in the message's transaction."""
    rt = runtime()
    principal = current_principal()
    try:
        event = body if mode is Mode.PLAIN else cloudevents.checked(body)
        envelope = rt.submitter.parse(event, correlation_id=correlation_id(),
                                      sender=principal.sender,
                                      correlation_given=correlation_given())
    except Problem as problem:
        received.count(body, problem)
        if mode is Mode.BINARY and isinstance(problem, InvalidMessage):
            raise cloudevents.in_headers(problem, body) from None
        raise
    url = status_url(envelope.id)
    reply = {"id": envelope.id, "type": envelope.type, "status": "queued", "status_url": url}
    # The idempotency key's answer and the rate-limit hit ride in the message's own
    # transaction, if they can.
    hit = charge.hit() if charge is not None else None
    [result] = rt.submitter.submit([envelope], owner=principal.subject, channel=mode.channel,
                                   answer=attempt.answer(reply, url) if attempt.answer else None,
                                   hit=hit)
    if charge is not None and hit is not None and hit_counted(result):
        charge.counted = True
    if isinstance(result, RateLimited) and charge is not None:
        refused = charge.refused()
        received.count(body, refused)
        raise refused
    attempt.enqueued = isinstance(result, Accepted | Uncertain)
    if isinstance(result, Repeated):
        raise result  # the key's path answers as the earlier request was answered
    if isinstance(result, Uncertain) and result.runs:
        attempt.answered = (reply, url)  # a repeat gets the 202 (in a transaction, it has)
    received.count(body, result)
    if isinstance(result, Problem):
        raise result
    response = jsonify(reply)
    response.headers["Location"] = url
    return response, 202


def _submit_batch(mode: Mode, items: list[Any], attempt: Attempt, received: Received) -> Reply:
    """A batch: 202 with one result per item when any was accepted, else the batch's problem
    with the same results."""
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
        results = rt.submitter.submit_raw(items, owner=principal.subject, channel=mode.channel,
                                          correlation_id=correlation_id(),
                                          sender=principal.sender,
                                          correlation_given=correlation_given())
    accepted = sum(1 for r in results if isinstance(r, Accepted))
    uncertain = sum(1 for r in results if isinstance(r, Uncertain))
    attempt.enqueued = accepted + uncertain > 0
    received.count_all(items, results)
    url = status_urls()
    report = [_item(i, r, url) for i, r in enumerate(results)]
    if uncertain:
        # Recorded, but not known to be enqueued or replicated: a 503; a repeat gets the 202
        # it would be.
        if all(r.runs for r in results if isinstance(r, Uncertain)):
            done = [r.accepted if isinstance(r, Uncertain) else r for r in results]
            attempt.answered = ({"accepted": accepted + uncertain,
                                 "rejected": len(items) - accepted - uncertain,
                                 "results": [_item(i, r, url) for i, r in enumerate(done)]},
                                None)
        # Otherwise the key stays taken, unanswered, until it expires: a repeat is refused
        # rather than answered 202 for a message that may not exist, or enqueued twice.
        raise Unavailable(f"{accepted + uncertain} message(s) of the batch were recorded, "
                          f"{uncertain} of them not known to be enqueued or replicated: the "
                          "broker or a failover of the store's Redis may have lost those, and "
                          "they may still run. Retrying with the same Idempotency-Key is safe.",
                          retry_after=rt.settings.retry_after_seconds,
                          enqueued="yes" if all(isinstance(r, Unreplicated) for r in results
                                                if isinstance(r, Uncertain)) else "unknown",
                          replicated="unknown", results=report)
    if accepted:
        return jsonify(accepted=accepted, rejected=len(items) - accepted, results=report), 202
    if any(isinstance(r, Unavailable) for r in results):
        raise Unavailable("No message of the batch could be enqueued.",
                          retry_after=rt.settings.retry_after_seconds, results=report)
    raise InvalidMessage("No message of the batch was accepted.", results=report)


def _item(index: int, result: Result, url: Callable[[str], str]) -> dict[str, Any]:
    if isinstance(result, Accepted):
        return {"index": index, "status": 202, "id": result.id, "status_url": url(result.id)}
    return {"index": index, "status": result.status, "problem": result.to_dict()}
