"""The deployment's secrets, checked at start: placeholders and low-entropy values refused in
production, warned about in development."""

from __future__ import annotations

import ipaddress
import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

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
    if host == "localhost" or is_loopback(host):
        return None
    return unquote(password) if password else None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (a name is not)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def weak_secrets(settings: Settings) -> list[WeakSecret]:
    """Every secret this process is configured with that production refuses: the HMAC token
    secret, the passwords in the Redis and broker URLs and of the sentinels, Flower's login,
    Grafana's admin password and the Redis exporter's password (the last three where the
    process has them: Flower, ``integration check``)."""
    found: list[WeakSecret] = []

    def judge(variable: str, value: str | None, generate: str = GENERATE) -> None:
        reason = secret_weakness(value) if value else None
        if reason and WeakSecret(variable, reason, generate) not in found:
            found.append(WeakSecret(variable, reason, generate))

    if settings.jwt_algorithm.startswith("HS") and settings.jwt_secret is not None:
        judge("INTEGRATION_JWT_SECRET", settings.jwt_secret.get_secret_value())
    # A broker URL may name several RabbitMQ nodes (``amqp://a;amqp://b``), each with its own.
    brokers = (settings.broker_url or "").split(";")
    for variable, url in (("INTEGRATION_REDIS_URL", settings.redis_url),
                          *(("INTEGRATION_BROKER_URL", broker) for broker in brokers)):
        judge(f"the password in {variable}", _url_password(url), GENERATE_FOR_URL)
    if settings.redis_sentinel_password is not None:
        judge("INTEGRATION_REDIS_SENTINEL_PASSWORD",
              settings.redis_sentinel_password.get_secret_value(), GENERATE_FOR_URL)
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
