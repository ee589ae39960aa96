"""The OpenAPI document as the API answers: spectree's, with every problem answer documented as
``application/problem+json`` and any status an operation does not list as a problem document."""

from __future__ import annotations

from typing import Any

from spectree import SpecTree

from integration.messages.problems import PROBLEM_CONTENT_TYPE

PROBLEM_SCHEMA = {"$ref": "#/components/schemas/ProblemDocument"}
_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


class ProblemSpecTree(SpecTree):
    """spectree, whose document (``spec``: what ``/openapi.json`` and spectree's own routes
    serve) is passed through ``document_problems``, which changes it once and then no more."""

    @property
    def spec(self) -> dict[str, Any]:
        return document_problems(super().spec)


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
