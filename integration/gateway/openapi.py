"""The OpenAPI document as the API answers: spectree's, with every problem answer documented as
``application/problem+json``, any status an operation does not list as a problem document, and
the CloudEvents media types ``POST /api/v1/messages`` accepts."""

from __future__ import annotations

from typing import Any

from integration.gateway.cloudevents import BATCHED, REQUIRED, STRUCTURED
from integration.messages.problems import PROBLEM_CONTENT_TYPE

PROBLEM_SCHEMA = {"$ref": "#/components/schemas/ProblemDocument"}
MESSAGES = "/api/v1/messages"
_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


def document_answers(document: dict[str, Any]) -> dict[str, Any]:
    """Complete spectree's document in place (it is built once and cached by spectree)."""
    document_problems(document)
    document_cloudevents(document)
    return document


def document_problems(document: dict[str, Any]) -> dict[str, Any]:
    """spectree documents every response as ``application/json``; a problem is sent as
    ``application/problem+json``. And any API operation may refuse with a status it does
    not list (401 without a valid token, 403 for a token that grants nothing, 429 over the
    rate limit, 503 when the store cannot be reached): the ``default`` response says such
    an answer is a problem document."""
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for response in responses.values():
                content = response.get("content") or {}
                body = content.get("application/json")
                if body is not None and body.get("schema") == PROBLEM_SCHEMA:
                    response["content"] = {PROBLEM_CONTENT_TYPE: body}
            if path.startswith("/api/"):
                responses.setdefault("default", {
                    "description": "Any other refusal, as an RFC 9457 problem document",
                    "content": {PROBLEM_CONTENT_TYPE: {"schema": PROBLEM_SCHEMA}}})
    return document


def document_cloudevents(document: dict[str, Any]) -> dict[str, Any]:
    """The message envelope is a CloudEvent: structured mode sends one (with the four required
    attributes), batched mode an array; binary mode sends ``ce-*`` headers and JSON data."""
    operation = document.get("paths", {}).get(MESSAGES, {}).get("post")
    if operation is None or "Envelope" not in document.get("components", {}).get("schemas", {}):
        return document
    event = {"allOf": [{"$ref": "#/components/schemas/Envelope"},
                       {"type": "object", "required": list(REQUIRED)}]}
    body = operation.setdefault("requestBody", {})
    body.setdefault("content", {}).update({
        STRUCTURED: {"schema": event},
        BATCHED: {"schema": {"type": "array", "items": event}},
    })
    body["description"] = (
        "A message or a JSON array of them (application/json); a CloudEvent in structured "
        f"({STRUCTURED}) or batched ({BATCHED}) mode; or, in binary mode, the event's "
        "attributes as ce-* headers and its data as an application/json body.")
    return document
