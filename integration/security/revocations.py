"""Revoked tokens: by id (``jti``) and by subject up to a moment, kept in Redis and remembered
briefly by each process."""

from __future__ import annotations

import hashlib
import time
from typing import cast

import redis

from integration.messages.memo import remember
from integration.security.verification import TokenClaims


class Revocations:
    """Revoked tokens: by id (``jti``), each kept until the token would have expired anyway,
    and by subject (every token of a subject issued at or before a moment, with or without
    a ``jti``).

    With ``check_interval`` > 0, a process trusts a "not revoked" answer that long instead of
    asking Redis on every request (a round trip per request saved under load); a revoked answer
    is final. ``revoke`` and ``revoke_subject`` forget their own process's answer at once.
    """

    #: Token ids whose answers one process remembers (the oldest go first).
    REMEMBERED = 10_000
    #: Moves a subject's revocation moment forward only: a later call with an earlier moment
    #: must not make valid again the tokens that an earlier call revoked.
    _LATEST = """
    local current = redis.call('GET', KEYS[1])
    if (not current) or tonumber(current) < tonumber(ARGV[1]) then
        redis.call('SET', KEYS[1], ARGV[1])
        return ARGV[1]
    end
    return current
    """

    def __init__(self, client: redis.Redis, prefix: str, max_ttl: int,
                 check_interval: float = 0.0) -> None:
        self.client = client
        self.prefix = prefix
        self.max_ttl = max_ttl
        self.check_interval = check_interval
        #: jti -> (monotonic time of the answer, revoked)
        self._answers: dict[str, tuple[float, bool]] = {}
        #: subject -> (monotonic time of the answer, when it was revoked or None)
        self._subjects: dict[str, tuple[float, float | None]] = {}

    def _key(self, jti: str) -> str:
        return f"{self.prefix}:revoked:{jti}"

    def revoke(self, jti: str, expires_at: int | None = None) -> int:
        """Revoke ``jti``; without its expiry it is kept for the longest token lifetime."""
        ttl = self.max_ttl if expires_at is None else int(expires_at - time.time()) + 60
        ttl = max(1, min(ttl, self.max_ttl))
        self.client.set(self._key(jti), int(time.time()), ex=ttl)
        self._answers.pop(jti, None)
        return ttl

    def is_revoked(self, jti: str) -> bool:
        if self.check_interval <= 0:
            return bool(self.client.exists(self._key(jti)))
        now = time.monotonic()
        answer = self._answers.get(jti)
        if answer is not None and (answer[1] or now - answer[0] < self.check_interval):
            return answer[1]
        revoked = bool(self.client.exists(self._key(jti)))
        remember(self._answers, jti, (now, revoked), self.REMEMBERED)
        return revoked

    def token_revoked(self, claims: TokenClaims) -> bool:
        """Whether a token is revoked, by its id or by its subject (the one check of REST
        requests, WebSocket frames and open sockets). When both remembered answers are due,
        both are asked in one round trip."""
        if claims.token_id is not None and self._both_due(claims):
            self._ask_both(claims.token_id, claims.subject)
        if claims.token_id is not None and self.is_revoked(claims.token_id):
            return True
        return self.revoked_since(claims.subject, claims.issued_at)

    def _both_due(self, claims: TokenClaims) -> bool:
        if self.check_interval <= 0 or claims.token_id is None:
            return False
        now = time.monotonic()
        by_id = self._answers.get(claims.token_id)
        by_subject = self._subjects.get(claims.subject)
        return (by_id is None or not (by_id[1] or now - by_id[0] < self.check_interval)) and \
            (by_subject is None or now - by_subject[0] >= self.check_interval)

    def _ask_both(self, jti: str, subject: str) -> None:
        """Remember the answers for ``jti`` and ``subject`` from one pipelined round trip."""
        now = time.monotonic()
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(self._key(jti))
        pipe.get(self._subject_key(subject))
        revoked, raw = pipe.execute()
        remember(self._answers, jti, (now, bool(revoked)), self.REMEMBERED)
        remember(self._subjects, subject, (now, float(raw) if raw else None), self.REMEMBERED)

    def tokens_revoked(self, tokens: list[TokenClaims]) -> list[bool]:
        """``token_revoked`` for many tokens in one round trip, without the remembered
        answers (open sockets are checked on a timer, not per request)."""
        pipe = self.client.pipeline(transaction=False)
        for claims in tokens:
            if claims.token_id is not None:
                pipe.exists(self._key(claims.token_id))
            pipe.get(self._subject_key(claims.subject))
        replies = iter(pipe.execute())
        revoked = []
        for claims in tokens:
            by_id = bool(next(replies)) if claims.token_id is not None else False
            raw = next(replies)
            moment = float(raw) if raw else None
            revoked.append(by_id or _covers(moment, claims.issued_at))
        return revoked

    # -- by subject: every token of a subject issued before a moment, and what it created --
    def _subject_key(self, subject: str) -> str:
        digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
        return f"{self.prefix}:revoked-subject:{digest}"

    def revoke_subject(self, subject: str, at: float | None = None) -> float:
        """Revoke every token of ``subject`` issued at or before ``at`` (now), and stop the
        schedules and webhook subscriptions it created before then. Kept without expiry:
        what the subject created lives on. The moment only moves forward: returns the one
        in force (``at``, or a later one given before)."""
        moment = time.time() if at is None else at
        stored = self.client.eval(self._LATEST, 1, self._subject_key(subject), repr(moment))
        self._subjects.pop(subject, None)
        return float(cast(bytes | str, stored))

    def subject_revoked_at(self, subject: str) -> float | None:
        """When ``subject`` was last revoked (None: never), remembered ``check_interval``."""
        now = time.monotonic()
        answer = self._subjects.get(subject)
        if answer is not None and self.check_interval > 0 and \
                now - answer[0] < self.check_interval:
            return answer[1]
        raw = cast(bytes | None, self.client.get(self._subject_key(subject)))
        moment = float(raw) if raw else None
        remember(self._subjects, subject, (now, moment), self.REMEMBERED)
        return moment

    def revoked_since(self, subject: str, issued_at: float | None) -> bool:
        """Whether something ``subject`` made (a token issued, a schedule created) at
        ``issued_at`` falls under a revocation of the subject; unknown times do."""
        return _covers(self.subject_revoked_at(subject), issued_at)


def _covers(revoked_at: float | None, issued_at: float | None) -> bool:
    """A subject revoked at ``revoked_at`` revokes what it made at ``issued_at``."""
    return revoked_at is not None and (issued_at is None or issued_at <= revoked_at)
