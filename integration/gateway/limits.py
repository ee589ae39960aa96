"""Abuse limits: per-subject rate limits shared by every gateway process (Flask-Limiter on
Redis), per-IP limits for unauthenticated routes, and security headers on every response.

A single submit on the store's Redis has its hit counted in its message's transaction
instead (decision 0011): Flask-Limiter lets it through uncounted, and the submitting view
sends the hit that ``SubmitCharge`` gives with the message, the same budget on the same keys.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache

from flask import Blueprint, Flask, Response, current_app, g, request
from flask_jwt_extended import get_jwt_identity, verify_jwt_in_request
from flask_limiter import HeaderNames, Limiter, RequestLimit
from flask_limiter.util import get_remote_address
from limits import RateLimitItem
from limits import parse as parse_limit

from integration.broker.redis_enqueue import RateHit, Strategy
from integration.gateway.auth import current_principal
from integration.gateway.cloudevents import request_mode
from integration.gateway.console import policy as console_policy
from integration.gateway.docs import POLICY as DOCS_POLICY
from integration.gateway.errors import problem_response
from integration.gateway.metrics import gateway_metrics
from integration.gateway.ratelimitstore import CoalescedStorage, coalesced_uri
from integration.messages.memo import remember
from integration.messages.problems import TooManyRequests
from integration.settings import Settings
from integration.store.redis_client import limits_storage

log = logging.getLogger(__name__)

EXTENSION_KEY = "integration_limiter"
#: The scope of the per-subject budget that every API route shares.
SHARED_SCOPE = "api"
#: Routes that probes and scrapers call often; a limit there would only cause false alarms.
UNLIMITED_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "prometheus_metrics"})
#: Subjects whose hits one process remembers (the oldest go first).
REMEMBERED = 4096
#: The route whose single messages carry their own hit (``SubmitCharge``).
SUBMIT_ENDPOINT = "api.submit_messages"


@lru_cache(maxsize=256)  # a handful of limit strings per deployment, parsed once each
def _item(limit: str) -> RateLimitItem:
    return parse_limit(limit)


@dataclass(frozen=True)
class SharedBudget:
    """Each subject's one budget across the API, as Flask-Limiter keeps it in Redis: the
    key of the shared limit, and its hits made outside a request's own limit check."""

    limiter: Limiter
    prefix: str
    strategy: Strategy
    #: ``hit``'s answers by (subject, limit).
    _hits: dict[tuple[str, str], RateHit | None] = field(default_factory=dict, compare=False)

    def key(self, subject: str) -> list[str]:
        """Flask-Limiter's identifiers of the shared limit: [key prefix, key function's
        value, scope]."""
        return [self.prefix, f"sub:{subject}", SHARED_SCOPE]

    def charge(self, subject: str, limit: str) -> int | None:
        """Count one request against ``subject``'s budget as an API call is counted; the
        seconds to wait when it is spent, else None (also when the store is unreachable,
        like the HTTP limiter: no store, no limit)."""
        try:
            if self.limiter.limiter.hit(_item(limit), *self.key(subject)):
                return None
        except Exception:  # noqa: BLE001
            log.warning("rate-limit store unavailable; request not counted")
            return None
        return self.retry_after(subject, limit)

    def retry_after(self, subject: str, limit: str) -> int:
        """Seconds until ``subject``'s spent budget admits a request again (one read)."""
        try:
            reset_at = self.limiter.limiter.get_window_stats(_item(limit),
                                                             *self.key(subject)).reset_time
        except Exception:  # noqa: BLE001 - a 429 all the same, with the shortest wait
            return 1
        return max(1, math.ceil(reset_at - time.time()))

    def hit(self, subject: str, limit: str) -> RateHit | None:
        """The hit as the enqueue script counts it (None when the limiter's storage is not
        the store's Redis): the same for every request of a subject, so made once."""
        hit = self._hits.get((subject, limit))
        if hit is None:
            hit = self._hit(subject, limit)
            remember(self._hits, (subject, limit), hit, REMEMBERED)
        return hit

    def _hit(self, subject: str, limit: str) -> RateHit | None:
        storage = self.limiter.storage
        if not isinstance(storage, CoalescedStorage):
            return None
        item = _item(limit)
        key = item.key_for(*self.key(subject))
        return RateHit(self.strategy, storage.window_keys(self.strategy, key), item.amount,
                       item.get_expiry())


@dataclass
class SubmitCharge:
    """The hit of a submit that Flask-Limiter let through uncounted: sent with a single
    message (``hit``), or counted here (``charge``) when the request never reached that
    transaction (a batch, an invalid message, a full queue); once either way."""

    budget: SharedBudget
    subject: str
    limit: str
    counted: bool = False

    def hit(self) -> RateHit | None:
        """The hit to send with the message (its sender then reports whether it was)."""
        return self.budget.hit(self.subject, self.limit)

    def charge(self) -> None:
        """Count the hit now unless it was; over the limit, raise the 429."""
        if self.counted:
            return
        self.counted = True
        wait = self.budget.charge(self.subject, self.limit)
        if wait is not None:
            raise self._too_many(wait)

    def refused(self) -> TooManyRequests:
        """The 429 of a hit the message's transaction refused."""
        self.counted = True
        return self._too_many(self.budget.retry_after(self.subject, self.limit))

    def _too_many(self, wait: int) -> TooManyRequests:
        return TooManyRequests(f"Rate limit of {_item(self.limit)} exceeded; retry in "
                               f"{wait} s.", retry_after=wait)


def submit_charge() -> SubmitCharge | None:
    """This request's uncounted hit, if Flask-Limiter left it to the submitting view."""
    return g.get("submit_charge")


def _authenticated() -> bool:
    """Verify the request's token once; the API's own check then reuses it. An OPTIONS
    request carries none to verify (flask-jwt-extended exempts it): it counts by address."""
    if request.method == "OPTIONS":
        return False
    if "token_valid" not in g:
        try:
            verify_jwt_in_request()
            g.token_valid = True
        except Exception:  # noqa: BLE001 - an invalid token is refused later, with its 401
            g.token_valid = False
    return bool(g.token_valid)


def _subject_or_address() -> str:
    """Whom a request counts against: the token's subject, or the client address without one."""
    return f"sub:{get_jwt_identity()}" if _authenticated() else f"ip:{get_remote_address()}"


def _too_many_requests(limit: RequestLimit) -> Response:
    wait = max(1, math.ceil(limit.reset_at - time.time()))
    problem = TooManyRequests(f"Rate limit of {limit.limit} exceeded; retry in {wait} s.",
                              retry_after=wait)
    if request.endpoint == "api.submit_messages":
        gateway_metrics().count(None, problem, channel=request_mode().channel)
    elif request.endpoint == "api.alertmanager.receive_alertmanager":
        gateway_metrics().count({"type": "alert"}, problem, channel="alertmanager")
    return problem_response(problem)


def init_limiter(app: Flask, settings: Settings, *blueprints: Blueprint,
                 submit_counts: bool = False) -> Limiter:
    """Flask-Limiter on the store's Redis, one budget per subject over ``blueprints``.
    ``submit_counts``: the submitter counts a single message's hit in its transaction."""
    uri, options = limits_storage(settings)
    options = {**options, "socket_timeout": settings.publish_timeout_seconds,
               "socket_connect_timeout": settings.publish_timeout_seconds}
    limiter = Limiter(
        key_func=get_remote_address,
        app=app,
        storage_uri=coalesced_uri(uri),
        storage_options=options,
        strategy=settings.rate_limit_strategy,
        default_limits=[settings.anonymous_rate_limit],
        default_limits_exempt_when=lambda: request.endpoint in UNLIMITED_ENDPOINTS,
        headers_enabled=settings.rate_limit_headers,
        # Flask-Limiter would put Retry-After on every response (even a 200, and over our
        # 503's own value); Retry-After is only sent with the 429 below.
        header_name_mapping={HeaderNames.RETRY_AFTER: "X-RateLimit-Retry-After"},
        on_breach=_too_many_requests,
        key_prefix=_key_prefix(settings),
        # A rate-limit store that cannot be reached must not take the API down with it.
        swallow_errors=True,
    )

    def limit_for_caller() -> str:
        if _authenticated():
            return current_principal().grants.rate_limit
        return settings.anonymous_rate_limit

    # One budget per subject across the whole API (WebSocket upgrades included), not one
    # per route.
    shared = limiter.shared_limit(limit_for_caller, scope=SHARED_SCOPE,
                                  key_func=_subject_or_address, on_breach=_too_many_requests)
    for blueprint in blueprints:
        shared(blueprint)
    budget = SharedBudget(limiter, _key_prefix(settings), settings.rate_limit_strategy)
    app.extensions[EXTENSION_KEY] = budget

    # The X-RateLimit-* headers come from Flask-Limiter's own check: with them on, it counts.
    if submit_counts and not settings.rate_limit_headers and \
            isinstance(limiter.storage, CoalescedStorage):
        @limiter.request_filter
        def _counted_by_submit() -> bool:
            # A token granting nothing is refused before the view: Flask-Limiter counts it.
            if request.endpoint != SUBMIT_ENDPOINT or not _authenticated() or \
                    current_principal().grants.nothing:
                return False
            g.submit_charge = SubmitCharge(budget, get_jwt_identity(),
                                           current_principal().grants.rate_limit)
            return True

    return limiter


def _key_prefix(settings: Settings) -> str:
    return f"{settings.key_prefix}:ratelimit"


def charge(subject: str, limit: str) -> int | None:
    """Count one request against ``subject``'s shared budget, as an API call would be counted
    (a submit frame on a WebSocket); the seconds to wait when it is spent, else None."""
    budget: SharedBudget = current_app.extensions[EXTENSION_KEY]
    return budget.charge(subject, limit)


def security_headers(response: Response) -> Response:
    """Headers that keep browsers from sniffing, framing or caching API answers."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith("/docs"):  # the docs page loads the gateway's own viewer
        headers.setdefault("Content-Security-Policy", DOCS_POLICY)
    elif request.path.startswith("/console"):  # the console's own script and styles only
        headers.setdefault("Content-Security-Policy", console_policy())
        headers.setdefault("Cache-Control", "no-store")
    else:
        headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        headers.setdefault("Cache-Control", "no-store")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response
