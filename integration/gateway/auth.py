"""Bearer-token authentication with flask-jwt-extended; every failure is a 401 problem."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response
from flask_jwt_extended import JWTManager

from integration.gateway.errors import problem_response
from integration.problems import Unauthorized
from integration.settings import ConfigurationError, Settings
from integration.tokens import ALGORITHM


def _unauthorized(detail: str) -> Response:
    return problem_response(Unauthorized(detail))


def init_auth(app: Flask, settings: Settings) -> JWTManager:
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
    if not secret:
        raise ConfigurationError(
            "INTEGRATION_JWT_SECRET is not set: the gateway verifies bearer tokens with it. "
            "Set it to a random string of at least 32 bytes (make run generates one)."
        )
    app.config.update(
        JWT_SECRET_KEY=secret,
        JWT_ALGORITHM=ALGORITHM,
        JWT_DECODE_ALGORITHMS=[ALGORITHM],
        JWT_TOKEN_LOCATION=["headers"],
        JWT_DECODE_LEEWAY=10,
        JWT_ERROR_MESSAGE_KEY="detail",
    )
    jwt = JWTManager(app)

    # flask-jwt-extended answers 422 for several invalid tokens by default: all are 401 here.
    @jwt.unauthorized_loader
    def _missing(reason: str) -> Response:
        return _unauthorized("A bearer token is required (Authorization: Bearer <token>).")

    @jwt.invalid_token_loader
    def _invalid(reason: str) -> Response:
        return _unauthorized("The bearer token is invalid.")

    @jwt.expired_token_loader
    def _expired(header: dict[str, Any], payload: dict[str, Any]) -> Response:
        return _unauthorized("The bearer token has expired.")

    @jwt.revoked_token_loader
    def _revoked(header: dict[str, Any], payload: dict[str, Any]) -> Response:
        return _unauthorized("The bearer token has been revoked.")

    @jwt.needs_fresh_token_loader
    def _not_fresh(header: dict[str, Any], payload: dict[str, Any]) -> Response:
        return _unauthorized("A fresh token is required.")

    @jwt.token_verification_failed_loader
    def _claims(header: dict[str, Any], payload: dict[str, Any]) -> Response:
        return _unauthorized("The bearer token's claims were rejected.")

    @jwt.user_lookup_error_loader
    def _lookup(header: dict[str, Any], payload: dict[str, Any]) -> Response:
        return _unauthorized("The bearer token's subject is unknown.")

    return jwt
