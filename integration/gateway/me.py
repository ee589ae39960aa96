"""``GET /api/v1/me``: the caller's subject, roles and what they grant, so a client (the
console) offers only what the API would allow; the API checks every request all the same."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from spectree import Response as Responses
from spectree import SpecTree

from integration.gateway import schemas
from integration.gateway.auth import current_principal


def register(api: Blueprint, spec: SpecTree) -> None:
    """Add the caller's description to the API blueprint, documented on ``spec``."""

    @api.get("/me")
    @spec.validate(resp=Responses(HTTP_200=schemas.Caller), skip_validation=True,
                   tags=["access"])
    def describe_caller() -> Response:
        """Who the token is, and what its roles grant under the policy in force."""
        principal = current_principal()
        grants = principal.grants
        return jsonify(subject=principal.subject, roles=list(principal.roles), read=grants.read,
                       submit=list(grants.submit), subscribe=list(grants.subscribe),
                       manage={resource: grants.manage_scope(resource)
                               for resource in sorted(grants.manage)})
