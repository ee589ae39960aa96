"""The ``Idempotency-Key`` of a submission: one path for every request that carries one.

A repeat of the same request is answered as the first one was and enqueues nothing; the same
key with another body is refused (422), and a repeat while the first request is still being
handled is refused (409). A single message whose broker is the store's Redis takes the key in
its own transaction (no reservation round trip, and no pending key left behind by a gateway
that died mid-request); any other request reserves the key first, completes it with its
answer, or releases it when nothing was enqueued, so that the client can try again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from flask import Response, jsonify, request

from integration.broker.submission import Repeated
from integration.gateway.metrics import Received
from integration.messages.problems import Conflict, Unavailable, invalid
from integration.store.idempotency import (
    MAX_KEY_LENGTH,
    IdempotencyKeys,
    Stored,
    fingerprint,
    parse_key,
)
from integration.store.model import IdempotentAnswer

HEADER = "Idempotency-Key"
#: Builds the idempotent answer of a single message's 202 (its body and Location).
Answering = Callable[[dict[str, Any], str], IdempotentAnswer]
log = logging.getLogger(__name__)


@dataclass
class Attempt:
    """One submission under a key, as the submitting code sees it: ``answer`` (when set) goes
    into the message's transaction; it sets ``enqueued`` as soon as anything was, so a
    failure after that keeps the key. ``answered`` is what a repeat gets when this request
    is refused all the same (its messages enqueued but not known to be replicated): the
    answer it would have had (body, Location)."""

    answer: Answering | None = None
    enqueued: bool = False
    answered: tuple[dict[str, Any], str | None] | None = None


Reply = tuple[Response, int]
Submit = Callable[[Attempt], Reply]


@dataclass(frozen=True)
class RequestKey:
    """The request's key, scoped by its owner, and the fingerprint of what it sends."""

    keys: IdempotencyKeys
    owner: str
    key: str
    digest: str
    retry_after: int

    @classmethod
    def of_request(cls, keys: IdempotencyKeys, owner: str, identity: Callable[[], bytes],
                   retry_after: int) -> RequestKey | None:
        """The key the request carries (None without one); 422 for an unusable one.
        ``identity``: what makes two requests the same (read only when there is a key)."""
        header = request.headers.get(HEADER)
        if header is None:
            return None
        key = parse_key(header)
        if key is None:
            raise invalid([{"loc": ["header", HEADER], "type": "string_type",
                            "msg": f"1 to {MAX_KEY_LENGTH} printable characters"}],
                          f"Invalid {HEADER}.")
        return cls(keys, owner, key, fingerprint(identity()), retry_after)

    def _stored(self, reply: dict[str, Any] | None, location: str | None,
                status: int = 202) -> Stored:
        return Stored("done", self.digest, status, reply, location)

    def submit_once(self, submit: Submit, *, in_transaction: bool,
                    received: Received) -> Reply:
        """Submit unless an earlier request with this key was answered: then its answer.
        ``in_transaction``: one message, and a submitter that completes its answer."""
        if in_transaction:
            def claiming(reply: dict[str, Any], location: str) -> IdempotentAnswer:
                return self.keys.answer(self.owner, self.key, self._stored(reply, location),
                                        claim=True)

            try:
                return submit(Attempt(claiming))
            except Repeated as repeated:
                return self._repeat(Stored.from_json(repeated.stored), received)
        try:
            earlier = self.keys.reserve(self.owner, self.key, self.digest)
        except redis.RedisError:
            raise Unavailable("The status store is unavailable.",
                              retry_after=self.retry_after) from None
        if earlier is not None:
            return self._repeat(earlier, received)
        attempt = Attempt()
        try:
            response, status = submit(attempt)
        except BaseException:
            answered = attempt.answered
            if answered is not None:  # a repeat is answered as if this one had succeeded
                _settle(lambda: self.keys.complete(self.owner, self.key,
                                                   self._stored(*answered)))
            # Free the key only if nothing was enqueued: a repeat would enqueue it again.
            elif not attempt.enqueued:
                _settle(lambda: self.keys.release(self.owner, self.key))
            raise
        # What was enqueued stays answered as it was even if the store fails now: the key
        # then stays pending until it expires, and a repeat enqueues nothing.
        _settle(lambda: self.keys.complete(self.owner, self.key, self._stored(
            response.get_json(), response.headers.get("Location"), status)))
        return response, status

    def _repeat(self, earlier: Stored, received: Received) -> Reply:
        if earlier.fingerprint != self.digest:
            raise invalid([{"loc": ["header", HEADER], "type": "key_reused",
                            "msg": "this key was used with a different body"}],
                          f"The {HEADER} was already used for another request.")
        if earlier.state == "pending":
            raise Conflict(f"A request with this {HEADER} is still being handled.")
        received.count(None, Conflict())
        response = jsonify(earlier.body)
        if earlier.location:
            response.headers["Location"] = earlier.location
        response.headers["Idempotent-Replayed"] = "true"
        return response, earlier.status


def submit_once(key: RequestKey | None, submit: Submit, *, in_transaction: bool,
                received: Received) -> Reply:
    """Submit as ``key`` allows (see ``RequestKey.submit_once``); without a key, just submit."""
    if key is None:
        return submit(Attempt())
    return key.submit_once(submit, in_transaction=in_transaction, received=received)


def _settle(change: Callable[[], None]) -> None:
    """Complete or release a key; a store failure is logged, never the answer."""
    try:
        change()
    except Exception:  # noqa: BLE001 - the store failing now changes nothing enqueued
        log.warning("idempotency key left pending (it expires with its TTL)", exc_info=True)
