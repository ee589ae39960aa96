"""``DELETE /api/v1/tokens/<jti>`` and ``POST /tokens/revocations``: revoke one token, or every
token a subject was issued up to a moment."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify
from pydantic import ValidationError
from spectree import Response as Responses
from spectree import SpecTree

from integration.gateway import schemas
from integration.gateway.auth import current_principal
from integration.gateway.bodies import json_body
from integration.gateway.runtime import runtime
from integration.messages.problems import invalid, validation_errors

TOKEN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def register(api: Blueprint, spec: SpecTree) -> None:
    """Add the revocation views to the API blueprint, documented on ``spec``."""

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
