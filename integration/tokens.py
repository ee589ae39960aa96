"""Issue and read access tokens (HS256 JWTs in the shape flask-jwt-extended verifies)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import jwt

ALGORITHM = "HS256"
#: The claim that carries a token's roles (a list of strings).
ROLES_CLAIM = "roles"


def issue_token(secret: str, subject: str, roles: Sequence[str] = (), ttl_seconds: int = 3600,
                **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "sub": subject,
        ROLES_CLAIM: list(roles),
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": uuid.uuid4().hex,
        "type": "access",
        "fresh": False,
        **claims,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def read_token(secret: str, token: str) -> dict[str, Any]:
    """Verify a token's signature and expiry and return its claims."""
    return jwt.decode(token, secret, algorithms=[ALGORITHM])
