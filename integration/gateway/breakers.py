"""``GET /api/v1/breakers``: every downstream target's circuit breaker, for operators; and
``POST /breakers/<name>/reset`` to close one."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from spectree import Response as Responses
from spectree import SpecTree

from integration.gateway import schemas
from integration.gateway.auth import current_principal
from integration.gateway.runtime import runtime
from integration.messages.problems import Forbidden, NotFound


def register(api: Blueprint, spec: SpecTree) -> None:
    """Add the breaker listing to the API blueprint, documented on ``spec``."""

    @api.get("/breakers")
    @spec.validate(skip_validation=True, tags=["resilience"],
                   resp=Responses(HTTP_200=schemas.BreakerList, HTTP_403=schemas.ProblemDocument))
    def list_breakers() -> Response:
        """Every downstream target's breaker: state, failures, and when it may close."""
        principal = current_principal()
        if principal.grants.read != "any" and not principal.grants.may_manage("breakers"):
            raise Forbidden("manage:breakers")
        return jsonify(breakers=runtime().guards.describe_breakers())

    @api.post("/breakers/<name>/reset")
    @spec.validate(skip_validation=True, tags=["resilience"],
                   resp=Responses(HTTP_200=schemas.Breaker, HTTP_403=schemas.ProblemDocument,
                                  HTTP_404=schemas.ProblemDocument))
    def reset_breaker(name: str) -> Response:
        """Close a target's breaker now, its failures forgotten (``manage:breakers``); it
        opens again if the target keeps failing."""
        current_principal().require_manage("breakers")
        described = runtime().guards.reset_breaker(name)
        if described is None:
            raise NotFound("No breaker with this name.")
        return jsonify(described)
