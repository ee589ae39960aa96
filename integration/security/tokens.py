"""Issue and read access tokens in the shape flask-jwt-extended verifies."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

import jwt

#: The claim that carries a token's roles (a list of strings), unless configured otherwise.
ROLES_CLAIM = "roles"
#: ``token_use`` of long-lived tokens for senders that cannot refresh (e.g. Alertmanager).
SERVICE_TOKEN = "service"
#: The token id (``jti``) of the tokens this service issues: a random UUID's 32 hex digits.
TOKEN_ID = re.compile(r"[0-9a-f]{32}")


def issue_token(key: str, subject: str, roles: Sequence[str] = (), ttl_seconds: int = 3600,
                *, algorithm: str = "HS256", **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "sub": subject,
        ROLES_CLAIM: list(roles),
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": uuid.uuid4().hex,  # TOKEN_ID
        "type": "access",
        "fresh": False,
        **{name: value for name, value in claims.items() if value is not None},
    }
    return jwt.encode(payload, key, algorithm=algorithm)


def read_token(key: str, token: str, algorithm: str = "HS256") -> dict[str, Any]:
    """Verify a token's signature and expiry and return its claims."""
    return jwt.decode(token, key, algorithms=[algorithm],
                      options={"verify_aud": False, "verify_iss": False})


def unverified_claims(token: str) -> dict[str, Any]:
    """A token's claims without checking its signature (to revoke a token by its text)."""
    return jwt.decode(token, options={"verify_signature": False})


def is_token_id(text: str) -> bool:
    """Whether ``text`` has the form of the token ids this service issues."""
    return TOKEN_ID.fullmatch(text) is not None
