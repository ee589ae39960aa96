"""Abuse limits: per-subject rate limits shared by every gateway process (Flask-Limiter on
Redis), per-IP limits for unauthenticated routes, and security headers on every response."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from flask_jwt_extended import get_jwt_identity, verify_jwt_in_request
from flask_limiter import HeaderNames, Limiter, RequestLimit
from flask_limiter.util import get_remote_address

from integration.gateway.auth import current_principal
from integration.gateway.cloudevents import request_mode
from integration.gateway.errors import problem_response
from integration.gateway.metrics import gateway_metrics
from integration.problems import TooManyRequests
from integration.settings import Settings

log = logging.getLogger(__name__)

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


def init_limiter(app: Flask, settings: Settings, api: Blueprint) -> Limiter:
    timeouts: dict[str, Any] = {"socket_timeout": settings.publish_timeout_seconds,
                                "socket_connect_timeout": settings.publish_timeout_seconds}
    limiter = Limiter(
        key_func=get_remote_address,
        app=app,
        storage_uri=settings.redis_url,
        storage_options=timeouts,
        strategy=settings.rate_limit_strategy,
        default_limits=[settings.anonymous_rate_limit],
        default_limits_exempt_when=lambda: request.endpoint in UNLIMITED_ENDPOINTS,
        headers_enabled=True,
        # Flask-Limiter would put Retry-After on every response (even a 200, and over our
        # 503's own value); Retry-After is only sent with the 429 below.
        header_name_mapping={HeaderNames.RETRY_AFTER: "X-RateLimit-Retry-After"},
        on_breach=_too_many_requests,
        key_prefix=f"{settings.key_prefix}:ratelimit",
        # A rate-limit store that cannot be reached must not take the API down with it.
        swallow_errors=True,
    )

    def limit_for_caller() -> str:
        if _authenticated():
            return current_principal().grants.rate_limit
        return settings.anonymous_rate_limit

    # One budget per subject across the whole API, not one per route.
    limiter.shared_limit(limit_for_caller, scope="api", key_func=_subject_or_address,
                         on_breach=_too_many_requests)(api)
    return limiter


def security_headers(response: Response) -> Response:
    """Headers that keep browsers from sniffing, framing or caching API answers."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    if not request.path.startswith("/docs"):  # the docs page loads its viewer's scripts
        headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        headers.setdefault("Cache-Control", "no-store")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response
