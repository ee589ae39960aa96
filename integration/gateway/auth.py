"""Authentication (flask-jwt-extended) and the request's principal: subject, roles, grants.

Every failure is a 401 problem document (flask-jwt-extended answers 422 for several by
default); a revocation list that cannot be read fails closed with 503. REST requests and
WebSockets run the same ``TokenChecks``: registered as flask-jwt-extended's loaders for a
request's token, called by ``verify_token`` for a token sent in a WebSocket frame.

``VerifyingJWTManager`` reaches into two private names of flask-jwt-extended, pinned in
``setup.cfg`` and checked by ``tests/unit/test_library_internals.py``
(docs/decisions/0008-library-internals.md says why).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
from flask import Flask, Response, current_app, g
from flask_jwt_extended import JWTManager, decode_token, get_jwt
from flask_jwt_extended import get_unverified_jwt_headers as read_header
from flask_jwt_extended import view_decorators as jwt_views

from integration.broker.submission import Sender
from integration.gateway.errors import problem_response
from integration.messages.memo import remember
from integration.messages.problems import Forbidden, Unauthorized, Unavailable
from integration.security.policy import Grants, Policy
from integration.security.revocations import Revocations
from integration.security.verification import (
    InvalidClaims,
    TokenClaims,
    TokenVerification,
    token_claims,
)


@dataclass(frozen=True)
class Principal:
    """Who is calling, from the token only (never from the body)."""

    subject: str
    roles: tuple[str, ...]
    grants: Grants

    def require_manage(self, resource: str) -> None:
        if not self.grants.may_manage(resource):
            raise Forbidden(f"manage:{resource}")

    @property
    def sender(self) -> Sender:
        """This caller as the submitter of messages (its namespace and grants)."""
        return Sender(self.subject, self.grants)

    def may_manage_item(self, resource: str, owner: str | None) -> bool:
        return self.grants.may_manage_item(resource, self.subject, owner)

    def may_read(self, owner: str | None) -> bool:
        return self.grants.may_read(self.subject, owner)

    def require_some_grant(self) -> None:
        """Refuse a token whose roles grant nothing at all: the same 403 on every route
        (the type listing included) and on the WebSocket, whatever is asked."""
        if self.grants.nothing:
            raise Forbidden("any", "Your token's roles grant no permission in this "
                                   "deployment's policy; ask for a role that does.")


def principal_of(claims: TokenClaims, policy: Policy) -> Principal:
    return Principal(claims.subject, claims.roles, policy.grants(claims.roles))


def verified_claims(payload: dict[str, Any], roles_claim: str) -> TokenClaims:
    """``token_claims`` of a payload whose signature and times were verified, as a 401."""
    try:
        return token_claims(payload, roles_claim)
    except InvalidClaims as exc:
        raise Unauthorized(f"The bearer token's claims were rejected: {exc}.") from None


def current_principal() -> Principal:
    principal = g.get("principal")
    if principal is None:
        from integration.gateway.runtime import runtime

        rt = runtime()
        principal = principal_of(verified_claims(get_jwt(), rt.verification.roles_claim),
                                 rt.policy)
        g.principal = principal
    return principal


#: What a refused token is told, by the loaders and by ``verify_token`` alike.
INVALID = "The bearer token is invalid."
REVOKED = "The bearer token has been revoked."


@dataclass(frozen=True)
class TokenChecks:
    """The gateway's checks of a token beyond its signature and times: revocation, then the
    claims the service needs (the order of flask-jwt-extended's request verification)."""

    verification: TokenVerification
    revocations: Revocations

    def revoked(self, header: dict[str, Any], payload: dict[str, Any]) -> bool:
        # Runs before the claims are checked: a token with claims the service cannot read
        # is refused there, with its reason.
        try:
            claims = token_claims(payload, self.verification.roles_claim)
        except InvalidClaims:
            return False
        try:
            # By id, and by subject: every token of a revoked subject issued before the
            # revocation, with or without a jti (one without an iat counts as before).
            return self.revocations.token_revoked(claims)
        except Exception:  # noqa: BLE001 - fail closed: no answer means no entry
            raise Unavailable("The status store (Redis) is unreachable, so token revocation "
                              "cannot be checked; retry shortly.", unreachable="store") from None

    def claims_valid(self, header: dict[str, Any], payload: dict[str, Any]) -> bool:
        verified_claims(payload, self.verification.roles_claim)  # a 401 naming the claim
        return True


def verify_token(token: str, checks: TokenChecks) -> TokenClaims:
    """The checks of a REST request, for a token that came outside the request's headers (a
    WebSocket's auth frame): the library's ``decode_token`` (signature, times, audience,
    issuer, through the same manager), then the access type and ``checks``, in the order
    ``verify_jwt_in_request`` runs them. Refusals are the loaders' 401s."""
    payload = decode_token(token)
    header = read_header(token)
    if payload.get("type") == "refresh":
        raise Unauthorized(INVALID)
    if checks.revoked(header, payload):
        raise Unauthorized(REVOKED)
    return verified_claims(payload, checks.verification.roles_claim)


class VerifyingJWTManager(JWTManager):
    """flask-jwt-extended's manager, remembering the claims of tokens whose signature verified.

    A caller sends the same token with every request; decoding and verifying it took a
    tenth of a submit's CPU. The exact token text is the key, so another signature or claim
    is another entry. An entry lasts ``cache_seconds`` at most and never past the token's
    ``exp`` (plus leeway): after that the token is decoded again and refused as expired.
    Roles, revocation and the other per-request checks run on every request either way.
    The library has no public hook for this: ``_decode_jwt_from_config`` is the method its
    ``decode_token`` (and so every request) calls.
    """

    #: Tokens one process remembers (the oldest go first).
    REMEMBERED = 4096

    def __init__(self, app: Flask, cache_seconds: float, leeway: int) -> None:
        self.cache_seconds = cache_seconds
        self.leeway = leeway
        self._verified: dict[str, tuple[float, dict[str, Any]]] = {}
        self._headers: dict[str, dict[str, Any]] = {}
        super().__init__(app)
        _remember_headers()

    def _decode_jwt_from_config(self, encoded_token: str, csrf_value: Any = None,
                                allow_expired: bool = False) -> dict[str, Any]:
        if self.cache_seconds <= 0 or csrf_value or allow_expired:
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        now = time.time()
        entry = self._verified.get(encoded_token)
        if entry is not None and now < entry[0]:
            return dict(entry[1])
        claims = super()._decode_jwt_from_config(encoded_token)
        exp = claims.get("exp")
        if isinstance(exp, int | float):
            until = min(now + self.cache_seconds, exp + self.leeway)
            remember(self._verified, encoded_token, (until, dict(claims)), self.REMEMBERED)
        return claims

    def header_of(self, encoded_token: str) -> dict[str, Any]:
        """The token's header, as ``get_unverified_jwt_headers`` reads it: remembered by the
        token's text when the claims are (a pure function of the text, read only after the
        token verified), so PyJWT's per-character base64 check runs once per token."""
        if self.cache_seconds <= 0:
            return read_header(encoded_token)
        header = self._headers.get(encoded_token)
        if header is None:
            header = read_header(encoded_token)
            remember(self._headers, encoded_token, header, self.REMEMBERED)
        return dict(header)


def _remembered_header(encoded_token: str) -> dict[str, Any]:
    manager = current_app.extensions.get("flask-jwt-extended")
    if isinstance(manager, VerifyingJWTManager):
        return manager.header_of(encoded_token)
    return read_header(encoded_token)


def _remember_headers() -> None:
    """flask-jwt-extended reads the header of the request's token after decoding it, apart
    from the claims (``view_decorators`` imports ``get_unverified_jwt_headers`` by name):
    a second decode per request. Its name there is pointed at the gateway's manager, which
    remembers headers like claims; an app with another manager gets the library's reader.
    ``tests/functional/test_authentication.py`` counts PyJWT's header reads, so a release
    that reads the header elsewhere fails the suite instead of silently losing this."""
    jwt_views.get_unverified_jwt_headers = _remembered_header


def _unauthorized(detail: str) -> Response:
    return problem_response(Unauthorized(detail))


def init_auth(app: Flask, verification: TokenVerification, revocations: Revocations,
              policy: Policy) -> JWTManager:
    app.config.update(
        JWT_ALGORITHM=verification.algorithm,
        JWT_DECODE_ALGORITHMS=[verification.algorithm],
        JWT_TOKEN_LOCATION=["headers"],
        JWT_DECODE_LEEWAY=verification.leeway,
        JWT_DECODE_ISSUER=verification.issuer,
        JWT_DECODE_AUDIENCE=verification.audience,
        JWT_ERROR_MESSAGE_KEY="detail",
    )
    if verification.secret:
        app.config["JWT_SECRET_KEY"] = verification.secret
    elif verification.public_key:
        app.config["JWT_PUBLIC_KEY"] = verification.public_key
    manager = VerifyingJWTManager(app, verification.cache_seconds, verification.leeway)

    if verification.jwks is not None:
        jwks = verification.jwks

        @manager.decode_key_loader
        def _jwks_key(header: dict[str, Any], payload: dict[str, Any]) -> Any:
            try:
                return jwks.get_signing_key(str(header.get("kid"))).key
            except jwt.PyJWKClientConnectionError:
                raise Unavailable("The identity provider's keys cannot be fetched.") from None
            except jwt.PyJWKClientError:
                raise jwt.InvalidTokenError("unknown signing key") from None

    checks = TokenChecks(verification, revocations)
    manager.token_verification_loader(checks.claims_valid)
    manager.token_in_blocklist_loader(checks.revoked)

    @manager.unauthorized_loader
    def _missing(reason: str) -> Response:
        return _unauthorized("A bearer token is required (Authorization: Bearer <token>).")

    @manager.invalid_token_loader
    def _invalid(reason: str) -> Response:
        return _unauthorized(INVALID)

    @manager.expired_token_loader
    def _expired(header: dict[str, Any], payload: dict[str, Any]) -> Response:
        return _unauthorized("The bearer token has expired.")

    @manager.revoked_token_loader
    def _revoked_response(header: dict[str, Any], payload: dict[str, Any]) -> Response:
        return _unauthorized(REVOKED)

    @manager.needs_fresh_token_loader
    def _not_fresh(header: dict[str, Any], payload: dict[str, Any]) -> Response:
        return _unauthorized("A fresh token is required.")

    @manager.token_verification_failed_loader
    def _claims(header: dict[str, Any], payload: dict[str, Any]) -> Response:
        return _unauthorized("The bearer token's claims were rejected.")

    @manager.user_lookup_error_loader
    def _lookup(header: dict[str, Any], payload: dict[str, Any]) -> Response:
        return _unauthorized("The bearer token's subject is unknown.")

    return manager
