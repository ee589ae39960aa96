"""Idempotency keys for submissions (IETF draft-ietf-httpapi-idempotency-key-header).

A key is reserved atomically (``SET NX``) under its owner, so keys of different owners never
meet. A repeat with the same body gets the original answer and enqueues nothing; the same key
with another body is refused (422); a repeat while the first request is still being handled
is refused (409). A request that fails before anything was enqueued releases its key, so the
client can try again; once something was, the key is kept, so a repeat never enqueues twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson
import redis

from integration.store.model import IdempotentAnswer

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Stored:
    state: Literal["pending", "done"]
    fingerprint: str
    status: int = 0
    body: Any = None
    location: str | None = None

    @classmethod
    def from_json(cls, raw: str | bytes) -> Stored:
        """What a key holds (a reservation or an answer), as written by ``to_json``."""
        return cls(**json.loads(raw))

    def to_json(self) -> str:
        """As stored under the key (a batch's answer holds an item per message: orjson), or
        by the standard library where orjson refuses, as the answer itself was written."""
        try:
            return orjson.dumps(self.__dict__).decode()
        except TypeError:
            return json.dumps(self.__dict__)


def fingerprint(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def parse_key(header: str) -> str | None:
    """The key from the header (a Structured Field string, quotes optional); None if unusable."""
    key = header.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    return key if 0 < len(key) <= MAX_KEY_LENGTH and key.isprintable() else None


class IdempotencyKeys:
    def __init__(self, client: redis.Redis, prefix: str, ttl: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl

    def _key(self, owner: str, key: str) -> str:
        digest = hashlib.sha256(f"{owner}\x00{key}".encode()).hexdigest()
        return f"{self.prefix}:idem:{digest}"

    def reserve(self, owner: str, key: str, body_fingerprint: str) -> Stored | None:
        """Reserve the key for this request; or return what an earlier request stored."""
        pending = json.dumps({"state": "pending", "fingerprint": body_fingerprint})
        if self.client.set(self._key(owner, key), pending, nx=True, ex=self.ttl):
            return None
        raw = cast(bytes | None, self.client.get(self._key(owner, key)))
        if raw is None:  # expired between the two calls: try once more
            return self.reserve(owner, key, body_fingerprint)
        return Stored.from_json(raw)

    def answer(self, owner: str, key: str, stored: Stored,
               claim: bool = False) -> IdempotentAnswer:
        """``stored`` as the store's one-transaction path writes it, with the message; with
        ``claim``, for a key not reserved first (the transaction takes it if it is free)."""
        return IdempotentAnswer(self._key(owner, key), stored.to_json(), self.ttl, claim)

    def complete(self, owner: str, key: str, stored: Stored) -> None:
        self.client.set(self._key(owner, key), stored.to_json(), ex=self.ttl)

    def release(self, owner: str, key: str) -> None:
        self.client.delete(self._key(owner, key))
