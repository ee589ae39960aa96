"""Single-use sign-in links for the operator console: a random code stands for a token for a
few minutes, and the first to present it gets the token; the code is then gone.

Only a hash of the code is stored, so reading Redis does not give a working link.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import cast

import redis

#: How long a printed link works when nobody opens it.
LINK_TTL_SECONDS = 15 * 60


class SignInLinks:
    """Codes that each stand for one token, once."""

    def __init__(self, client: redis.Redis, prefix: str, ttl: int = LINK_TTL_SECONDS) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl

    def _key(self, code: str) -> str:
        return f"{self.prefix}:signin:{hashlib.sha256(code.encode()).hexdigest()}"

    def create(self, token: str) -> str:
        """A new code for ``token``, valid for ``ttl`` seconds or one use."""
        code = secrets.token_urlsafe(32)
        self.client.set(self._key(code), token, ex=self.ttl)
        return code

    def redeem(self, code: str) -> str | None:
        """The token the code stands for, once; None for an unknown, used or expired code."""
        if not code or len(code) > 128:
            return None
        value = cast(bytes | str | None, self.client.getdel(self._key(code)))
        return value.decode() if isinstance(value, bytes) else value
