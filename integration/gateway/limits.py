"""Abuse limits: per-subject rate limits shared by every gateway process (Flask-Limiter on
Redis), per-IP limits for unauthenticated routes, and security headers on every response."""

from __future__ import annotations

import logging
import math
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from flask_jwt_extended import get_jwt_identity, verify_jwt_in_request
from flask_limiter import HeaderNames, Limiter, RequestLimit
from flask_limiter.util import get_remote_address
from limits import parse as parse_limit

from integration.gateway.auth import current_principal
from integration.gateway.cloudevents import request_mode
from integration.gateway.console import policy as console_policy
from integration.gateway.docs import POLICY as DOCS_POLICY
from integration.gateway.errors import problem_response
from integration.gateway.metrics import gateway_metrics
from integration.gateway.ratelimitstore import coalesced_uri
from integration.messages.problems import TooManyRequests
from integration.settings import Settings
from integration.store.redis_client import limits_storage

log = logging.getLogger(__name__)

EXTENSION_KEY = "integration_limiter"
#: The scope of the per-subject budget that every API route shares.
SHARED_SCOPE = "api"
#: Routes that probes and scrapers call often; a limit there would only cause false alarms.
UNLIMITED_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "prometheus_metrics"})


def _authenticated() -> bool:
    """Verify the request's token once; the API's own check then reuses it."""
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


def init_limiter(app: Flask, settings: Settings, *blueprints: Blueprint) -> Limiter:
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
    app.extensions[EXTENSION_KEY] = (limiter, _key_prefix(settings))
    return limiter


def _key_prefix(settings: Settings) -> str:
    return f"{settings.key_prefix}:ratelimit"


def charge(subject: str, limit: str) -> int | None:
    """Count one request against ``subject``'s shared budget, as an API call would be counted
    (a submit frame on a WebSocket); the seconds to wait when it is spent, else None."""
    limiter, prefix = current_app.extensions[EXTENSION_KEY]
    item = parse_limit(limit)
    # Flask-Limiter's key for the shared limit: [key prefix, key function's value, scope].
    key = [prefix, f"sub:{subject}", SHARED_SCOPE]
    try:
        if limiter.limiter.hit(item, *key):
            return None
        reset_at = limiter.limiter.get_window_stats(item, *key).reset_time
    except Exception:  # noqa: BLE001 - like the HTTP limiter: no store, no limit
        log.warning("rate-limit store unavailable; WebSocket submit not counted")
        return None
    return max(1, math.ceil(reset_at - time.time()))


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
