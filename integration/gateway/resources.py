"""Blueprints of managed resources (schedules, subscriptions): one permission for every route,
and a store outage answered 503 with ``Retry-After`` rather than a 500; and the one way a
request finds an owned item by the id it gave."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from flask import Blueprint, Response

from integration.gateway.auth import current_principal
from integration.gateway.errors import problem_response
from integration.gateway.runtime import runtime
from integration.messages.ownership import candidates
from integration.messages.problems import Unavailable


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


def find_record(message_id: str, allowed: Callable[[dict[str, Any]], bool]
                ) -> dict[str, Any] | None:
    """The record ``message_id`` names for the caller (its own id first, then the id as it
    is) that ``allowed`` lets it see; others' records look exactly like missing ones."""
    store = runtime().store
    for candidate in candidates(current_principal().subject, message_id):
        record = store.get(candidate)
        if record is not None and allowed(record):
            return record
    return None
