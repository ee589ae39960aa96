"""Builds the submit path (registry, store, publisher) shared by the gateway and the client."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

import redis

from integration.broker.celery_app import create_celery
from integration.broker.publisher import Publisher
from integration.broker.submission import Submitter
from integration.events.consumers import default_subscriptions
from integration.events.dispatch import Dispatcher
from integration.events.results import EVENT_SOURCE
from integration.events.webhooks import Post, Webhooks
from integration.messages.jsonlimits import JsonLimits
from integration.messages.registry import default_registry
from integration.security.policy import load_policy
from integration.security.rights import CreatorRights
from integration.security.verification import Revocations
from integration.settings import Settings, get_settings
from integration.store.records import store_from_settings
from integration.worker.guards import Guards, GuardSettings


def build_submitter(settings: Settings, origin: str, *, coalesce: int = 0) -> Submitter:
    # Producers never import tasks/: they send by task name with celeryconfig's settings.
    celery = create_celery(f"integration.{origin}")
    celery.conf.broker_url = settings.broker
    publisher = Publisher(celery, settings.broker, timeout=settings.publish_timeout_seconds,
                          chunk_size=settings.publish_chunk_size, origin=origin)
    limits = JsonLimits(max_depth=settings.max_json_depth,
                        max_string=settings.max_string_length)
    return Submitter(default_registry(), store_from_settings(settings), publisher,
                     retry_after=settings.retry_after_seconds, limits=limits,
                     max_queue_depth=settings.max_queue_depth, coalesce=coalesce)


def build_guards(settings: Settings, client: redis.Redis) -> Guards:
    return Guards(client, settings.key_prefix, GuardSettings(
        fail_max=settings.breaker_fail_max,
        reset_timeout=settings.breaker_reset_timeout_seconds,
        action_rate_limit=settings.action_rate_limit,
        loop_limit=settings.loop_limit,
        loop_window=settings.loop_window_seconds,
    ), settings.redis_url)


def build_dispatcher(submitter: Submitter) -> Dispatcher:
    """Deliveries of result events to consumers and webhooks, and messages that handlers
    emit."""
    return Dispatcher(submitter, default_subscriptions(), default_webhooks(),
                      source=EVENT_SOURCE)


@cache
def default_webhooks() -> Webhooks:
    """This process's view of the webhook subscriptions."""
    settings = get_settings()
    return Webhooks(store_from_settings(settings).client, settings.key_prefix,
                    disable_after=settings.webhook_disable_after)


@cache
def default_rights() -> CreatorRights:
    """This process's view of what schedules' and subscriptions' creators may still do."""
    settings = get_settings()
    return CreatorRights(load_policy(settings.policy_file), Revocations(
        store_from_settings(settings).client, settings.key_prefix,
        settings.service_token_max_ttl_seconds, settings.revocation_check_interval_seconds))


@cache
def default_post() -> Post:
    """How this process sends webhook deliveries: through the egress policy, unredirected."""
    from integration.security.egress import default_egress

    egress = default_egress()
    timeout = get_settings().webhook_timeout_seconds

    def post(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        return egress.request("POST", url, body=body, headers=headers, timeout=timeout).status

    return post
