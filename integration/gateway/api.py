"""The ``/api/v1`` blueprint: every request on it (and on the blueprints nested in it) is
authenticated first; ``create_app`` adds each resource's views from its table."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, request
from flask_jwt_extended import get_jwt, verify_jwt_in_request
from spectree import SpecTree

from integration.gateway.auth import current_principal

#: Adds one resource's views to the API blueprint, documented on the app's spec.
Register = Callable[[Blueprint, SpecTree], None]


def create_api() -> Blueprint:
    """The ``/api/v1`` blueprint, with no views yet."""
    api = Blueprint("api", __name__, url_prefix="/api/v1")

    @api.before_request
    def _authenticate() -> None:
        if request.method == "OPTIONS":
            return  # Flask's own answer (the allowed methods): no token to check, as for CORS
        try:
            get_jwt()  # already verified for this request (by the rate limiter's key)
        except RuntimeError:
            verify_jwt_in_request()
        current_principal().require_some_grant()

    return api


def nested(create: Callable[[SpecTree], Blueprint]) -> Register:
    """Register a resource that is a blueprint of its own, nested in the API blueprint (its
    endpoints are named ``api.<its name>.<view>``)."""
    def register(api: Blueprint, spec: SpecTree) -> None:
        api.register_blueprint(create(spec))

    return register
