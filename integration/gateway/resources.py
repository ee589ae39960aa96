"""Blueprints of managed resources (schedules, subscriptions): one permission for every route,
and a store outage answered 503 with ``Retry-After`` rather than a 500."""

from __future__ import annotations

import redis
from flask import Blueprint, Response

from integration.gateway.auth import current_principal
from integration.gateway.errors import problem_response
from integration.gateway.runtime import runtime
from integration.problems import Unavailable


def managed(blueprint: Blueprint, resource: str, store: str) -> Blueprint:
    """Require ``manage:<resource>`` on every route of ``blueprint``; name ``store`` when
    Redis cannot be reached."""

    @blueprint.before_request
    def _permission() -> None:
        current_principal().require_manage(resource)

    @blueprint.errorhandler(redis.RedisError)
    def _store_down(exc: redis.RedisError) -> Response:
        return problem_response(Unavailable(
            f"The {store} is unavailable.", retry_after=runtime().settings.retry_after_seconds))

    return blueprint
