"""Token verification settings and the deployment's other secrets, checked at start; revocations.

One algorithm family per deployment: HMAC (``INTEGRATION_JWT_SECRET``) or asymmetric
(``INTEGRATION_JWT_PUBLIC_KEY`` or ``INTEGRATION_JWT_JWKS_URL``), never both, so a token
signed with HMAC over the public key can never pass. Production refuses a secret that is a
placeholder or whose estimated entropy is low (``weak_secrets``); development warns.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import jwt
import redis

from integration.messages.memo import remember
from integration.settings import ConfigurationError, Settings

log = logging.getLogger(__name__)

#: Production refuses a secret whose estimated entropy (``entropy_bits``) is below this.
MIN_SECRET_BITS = 128
#: The placeholders of ``.env.example`` (``tests/functional/test_compose.py`` keeps this set
#: and that file in step) and values known from other examples: never a production secret,
#: however random some of them look to an estimate.
PLACEHOLDERS = frozenset({
    "replace-with-a-random-secret-of-at-least-32-bytes", "replace-me",
    "replace-with-openssl-rand-base64-48", "replace-with-openssl-rand-hex-32",
    "change-me", "changeme", "secret", "super-secret", "jwt-secret", "development", "test",
    "password", "admin",
})
#: How to make a secret: any character, and one that fits in a URL's userinfo as it is.
GENERATE = "`openssl rand -base64 48`"
GENERATE_FOR_URL = "`openssl rand -hex 32`"


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


def entropy_bits(value: str) -> float:
    """An estimate of a secret's randomness, in bits: its length times the Shannon entropy
    per character, of the characters or of the steps between neighbours, whichever is lower.
    Repeats (``aaaa…``) and runs (``abcd…``) count as next to nothing; a value drawn at random
    scores close to its real entropy, a chosen one above it."""
    if len(value) < 2:
        return 0.0
    steps = [ord(b) - ord(a) for a, b in zip(value, value[1:], strict=False)]
    return len(value) * min(_shannon(value), _shannon(steps))


def _shannon(items: Iterable[object]) -> float:
    counts = Counter(items)
    total = sum(counts.values())
    return max(0.0, -sum(n / total * math.log2(n / total) for n in counts.values()))


def secret_weakness(value: str) -> str | None:
    """Why ``value`` must not guard a production deployment, or None."""
    if value.strip().lower() in PLACEHOLDERS:
        return "is a placeholder (from .env.example or an example), not a secret"
    bits = entropy_bits(value)
    if bits < MIN_SECRET_BITS:
        return (f"has an estimated {bits:.0f} bits of entropy, fewer than the "
                f"{MIN_SECRET_BITS} production needs")
    return None


@dataclass(frozen=True)
class WeakSecret:
    """A secret of this process's configuration that production refuses (never its value)."""

    variable: str
    reason: str
    generate: str = GENERATE

    def __str__(self) -> str:
        return f"{self.variable} {self.reason}; generate one with {self.generate}"


def _url_password(url: str | None) -> str | None:
    """The password in a Redis or broker URL; None for a server on this host's loopback,
    which nothing else can reach (a local RabbitMQ's guest, a benchmark's Redis)."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        password = parts.password
        host = parts.hostname or ""
    except ValueError:
        return None
    if host == "localhost" or _is_loopback(host):
        return None
    return unquote(password) if password else None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def weak_secrets(settings: Settings) -> list[WeakSecret]:
    """Every secret this process is configured with that production refuses: the HMAC token
    secret, the passwords in the Redis and broker URLs, Flower's login, Grafana's admin
    password and the Redis exporter's password (the last three where the process has them:
    Flower, ``integration check``)."""
    found: list[WeakSecret] = []

    def judge(variable: str, value: str | None, generate: str = GENERATE) -> None:
        reason = secret_weakness(value) if value else None
        if reason:
            found.append(WeakSecret(variable, reason, generate))

    if settings.jwt_algorithm.startswith("HS") and settings.jwt_secret is not None:
        judge("INTEGRATION_JWT_SECRET", settings.jwt_secret.get_secret_value())
    for variable, url in (("INTEGRATION_REDIS_URL", settings.redis_url),
                          ("INTEGRATION_BROKER_URL", settings.broker_url)):
        judge(f"the password in {variable}", _url_password(url), GENERATE_FOR_URL)
    if settings.flower_basic_auth is not None:
        for entry in settings.flower_basic_auth.get_secret_value().split(","):
            judge("the password in FLOWER_BASIC_AUTH", entry.partition(":")[2] or entry)
    if settings.grafana_admin_password is not None:
        judge("GRAFANA_ADMIN_PASSWORD", settings.grafana_admin_password.get_secret_value())
    if settings.redis_exporter_password is not None:
        judge("REDIS_EXPORTER_PASSWORD", settings.redis_exporter_password.get_secret_value(),
              GENERATE_FOR_URL)
    return found


#: What this process has already warned about (development warns once per secret).
_warned: set[str] = set()


def refuse_weak_secrets(settings: Settings) -> None:
    """At start: in production, ``ConfigurationError`` naming every weak secret and how to
    generate one; in development, a warning for each."""
    weak = weak_secrets(settings)
    if weak and settings.env == "production":
        raise ConfigurationError(
            "Production refuses weak secrets: " + "; ".join(str(w) for w in weak) + ".")
    for secret in weak:
        if secret.variable not in _warned:
            _warned.add(secret.variable)
            log.warning("%s; INTEGRATION_ENV=production would refuse it", secret)


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
            raise ConfigurationError("INTEGRATION_JWT_SECRET is not set.")
        return settings.jwt_secret.get_secret_value()
    if settings.jwt_private_key is None:
        raise ConfigurationError(
            f"INTEGRATION_JWT_ALGORITHM is {settings.jwt_algorithm}: tokens come from your "
            "identity provider, or set INTEGRATION_JWT_PRIVATE_KEY to issue them here.")
    return _pem(settings.jwt_private_key.get_secret_value())


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
        requests, WebSocket frames and open sockets)."""
        if claims.token_id is not None and self.is_revoked(claims.token_id):
            return True
        return self.revoked_since(claims.subject, claims.issued_at)

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
