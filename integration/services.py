"""Builds the submit path (registry, store, publisher) shared by the gateway and the client."""

from __future__ import annotations

import redis

from integration.celery_app import create_celery
from integration.consumers import default_subscriptions
from integration.dispatch import Dispatcher
from integration.events import EVENT_SOURCE
from integration.guards import Guards, GuardSettings
from integration.jsonlimits import JsonLimits
from integration.publisher import Publisher
from integration.registry import default_registry
from integration.settings import Settings
from integration.store import store_from_settings
from integration.submission import Submitter


def build_submitter(settings: Settings, origin: str) -> Submitter:
    # Producers never import tasks/: they send by task name with celeryconfig's settings.
    celery = create_celery(f"integration.{origin}")
    celery.conf.broker_url = settings.broker
    publisher = Publisher(celery, settings.broker, timeout=settings.publish_timeout_seconds,
                          chunk_size=settings.publish_chunk_size, origin=origin)
    limits = JsonLimits(max_depth=settings.max_json_depth,
                        max_string=settings.max_string_length)
    return Submitter(default_registry(), store_from_settings(settings), publisher,
                     retry_after=settings.retry_after_seconds, limits=limits,
                     max_queue_depth=settings.max_queue_depth)


def build_guards(settings: Settings, client: redis.Redis) -> Guards:
    return Guards(client, settings.key_prefix, GuardSettings(
        fail_max=settings.breaker_fail_max,
        reset_timeout=settings.breaker_reset_timeout_seconds,
        action_rate_limit=settings.action_rate_limit,
        loop_limit=settings.loop_limit,
        loop_window=settings.loop_window_seconds,
    ), settings.redis_url)


def build_dispatcher(submitter: Submitter) -> Dispatcher:
    """Deliveries of result events to consumers, and messages that handlers emit."""
    return Dispatcher(submitter, default_subscriptions(), source=EVENT_SOURCE)
