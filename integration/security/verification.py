"""Token verification: the settings checked at start, and the claims of a verified token.

One algorithm family per deployment: HMAC (``INTEGRATION_JWT_SECRET``) or asymmetric
(``INTEGRATION_JWT_PUBLIC_KEY`` or ``INTEGRATION_JWT_JWKS_URL``), never both, so a token
signed with HMAC over the public key can never pass. Production refuses a secret that is a
placeholder or whose estimated entropy is low (``security.secrets``); development warns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from integration.security.secrets import GENERATE, secret_weakness
from integration.settings import ConfigurationError, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenVerification:
    """How the gateway verifies tokens: exactly one of secret, public key or JWKS client."""

    algorithm: str
    secret: str | None = None
    public_key: str | None = None
    jwks: jwt.PyJWKClient | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway: int = 10
    roles_claim: str = "roles"
    #: Seconds a verified token is trusted without verifying its signature again.
    cache_seconds: float = 300

    @property
    def hmac(self) -> bool:
        return self.algorithm.startswith("HS")


class InvalidClaims(ValueError):
    """A verified token whose claims the service cannot use; the message says which."""


@dataclass(frozen=True)
class TokenClaims:
    """The claims of a verified token that the service acts on, read by one function for
    REST requests and WebSockets alike (``token_claims``)."""

    subject: str
    roles: tuple[str, ...]
    #: Seconds since the epoch, as JSON numbers in the token.
    expires_at: float
    issued_at: float | None
    token_id: str | None

    def seconds_left(self, leeway: float, now: float | None = None) -> float:
        """How long the token is still accepted (PyJWT refuses it after ``exp + leeway``)."""
        return self.expires_at + leeway - (time.time() if now is None else now)


def roles_of(claims: Mapping[str, Any], path: str) -> tuple[str, ...] | None:
    """The roles at a dotted claim path (``roles``, ``realm_access.roles``); None if malformed."""
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(r, str) for r in value):
        return tuple(value)
    return None


def _number(value: Any) -> bool:
    # PyJWT compares int(value), so it also takes "1700000000" (a string) and true; a time
    # claim that is not a JSON number would then mean one thing there and another here.
    return isinstance(value, int | float) and not isinstance(value, bool)


def token_claims(payload: Mapping[str, Any], roles_claim: str) -> TokenClaims:
    """The claims of a token whose signature and times PyJWT verified, or ``InvalidClaims``:
    ``sub`` a non-empty string, ``exp`` a JSON number, ``iat`` and ``nbf`` JSON numbers when
    present, ``jti`` a non-empty string when present, the roles a list of strings."""
    subject = payload.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidClaims("sub must be a non-empty string")
    if "exp" not in payload:
        raise InvalidClaims("exp is required")
    for name in ("exp", "iat", "nbf"):
        if name in payload and not _number(payload[name]):
            raise InvalidClaims(f"{name} must be a number (seconds since the epoch)")
    token_id = payload.get("jti")
    if token_id is not None and (not isinstance(token_id, str) or not token_id):
        raise InvalidClaims("jti must be a non-empty string")
    roles = roles_of(payload, roles_claim)
    if roles is None:
        raise InvalidClaims(f"{roles_claim} must be a list of strings")
    issued = payload.get("iat")
    return TokenClaims(subject=subject, roles=roles, expires_at=float(payload["exp"]),
                       issued_at=float(issued) if issued is not None else None,
                       token_id=token_id)


def _pem(value: str) -> str:
    """A PEM given inline or as a path to a file."""
    return value if value.lstrip().startswith("-----BEGIN") else Path(value).read_text()


def token_verification(settings: Settings) -> TokenVerification:
    """Validate the token settings; raise ``ConfigurationError`` with what to change."""
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    common = {"algorithm": settings.jwt_algorithm, "issuer": settings.jwt_issuer,
              "audience": settings.jwt_audience, "leeway": settings.jwt_leeway_seconds,
              "roles_claim": settings.jwt_roles_claim,
              "cache_seconds": settings.jwt_verified_cache_seconds}
    if settings.jwt_algorithm.startswith("HS"):
        if settings.jwt_public_key or settings.jwt_jwks_url:
            raise ConfigurationError(
                f"INTEGRATION_JWT_ALGORITHM is {settings.jwt_algorithm} (HMAC) but a public key "
                "or JWKS URL is set: use one algorithm family only.")
        if not secret:
            raise ConfigurationError(
                "INTEGRATION_JWT_SECRET is not set: the gateway verifies bearer tokens with it. "
                f"Generate one with {GENERATE} (make run generates one).")
        weakness = secret_weakness(secret)
        if weakness and settings.env == "production":
            raise ConfigurationError(
                f"INTEGRATION_JWT_SECRET is too weak for production: it {weakness}; generate "
                f"one with {GENERATE}.")
        return TokenVerification(secret=secret, **common)  # type: ignore[arg-type]

    if secret:
        raise ConfigurationError(
            f"INTEGRATION_JWT_ALGORITHM is {settings.jwt_algorithm} (asymmetric) but "
            "INTEGRATION_JWT_SECRET is set: use one algorithm family only.")
    if bool(settings.jwt_public_key) == bool(settings.jwt_jwks_url):
        raise ConfigurationError(
            f"INTEGRATION_JWT_ALGORITHM is {settings.jwt_algorithm}: set exactly one of "
            "INTEGRATION_JWT_PUBLIC_KEY (PEM or path) and INTEGRATION_JWT_JWKS_URL.")
    if settings.jwt_public_key:
        try:
            return TokenVerification(public_key=_pem(settings.jwt_public_key),
                                     **common)  # type: ignore[arg-type]
        except OSError as exc:
            raise ConfigurationError(f"INTEGRATION_JWT_PUBLIC_KEY cannot be read: {exc}") from None
    # Keys are cached; an unknown key id triggers one refetch (at most once per cooldown, so
    # forged key ids cannot hammer the identity provider): rotation needs no restart.
    client = jwt.PyJWKClient(str(settings.jwt_jwks_url), cache_keys=True, lifespan=300,
                             timeout=5,
                             cooldown_duration=settings.jwt_jwks_refresh_cooldown_seconds)
    return TokenVerification(jwks=client, **common)  # type: ignore[arg-type]


def signing_key(settings: Settings) -> str:
    """The key ``integration token issue`` signs with (a secret or a private key)."""
    if settings.jwt_algorithm.startswith("HS"):
        if settings.jwt_secret is None or not settings.jwt_secret.get_secret_value():
            raise ConfigurationError(
                "INTEGRATION_JWT_SECRET is not set: tokens are signed with it; set the "
                f"gateway's secret (a new one: {GENERATE}).")
        return settings.jwt_secret.get_secret_value()
    if settings.jwt_private_key is None:
        raise ConfigurationError(
            f"INTEGRATION_JWT_ALGORITHM is {settings.jwt_algorithm}: tokens come from your "
            "identity provider, or set INTEGRATION_JWT_PRIVATE_KEY to issue them here.")
    return _pem(settings.jwt_private_key.get_secret_value())


