"""The composition root: this process's settings, registry, subscriptions, submitter,
dispatcher, guards and loop, each built once from the environment and handed down.

Nothing below this module builds one of these for itself or keeps a process-wide instance;
the gateway, the CLI, ``tasks/`` and ``celeryconfig`` ask here.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, cast

import redis
from limits.storage import Storage, storage_from_string

from integration.broker.celery_app import create_celery
from integration.broker.publisher import Publisher
from integration.broker.submission import Submitter
from integration.events.consumers import Subscription, delivery_type, load_subscriptions
from integration.events.dispatch import Dispatcher
from integration.events.results import EVENT_SOURCE
from integration.events.webhooks import Post, Webhooks, webhook_type
from integration.loop import executors
from integration.loop.payloads import ActionPayload
from integration.loop.rules import Rules, load_rules
from integration.loop.stages import Stages, loop_subscriptions
from integration.loop.thresholds import ThresholdEvaluator
from integration.loop.types import builtin_types
from integration.messages.envelope import Envelope
from integration.messages.jsonlimits import JsonLimits
from integration.messages.registry import Registry, load_types
from integration.messages.routing import Router, declare_queues
from integration.schedules.file import load_schedule_file
from integration.schedules.spec import ScheduleSpec
from integration.security.egress import Egress, egress_from_settings
from integration.security.policy import load_policy
from integration.security.revocations import Revocations
from integration.security.rights import CreatorRights
from integration.settings import Settings
from integration.store.records import store_from_settings
from integration.store.redis_client import limits_storage, redis_client
from integration.store.replication import ReplicaWait
from integration.worker.guards import Guards, GuardSettings

if TYPE_CHECKING:
    from kombu import Queue


@cache
def get_settings() -> Settings:
    """Settings of this process, read from the environment once."""
    return Settings()


def ping_store(settings: Settings) -> None:
    """Ask the store's Redis for an answer within the publish timeout, as start-up checks do;
    raises redis-py's errors (``AuthenticationError`` for a wrong password)."""
    client = redis_client(settings, health_check_interval=0)
    try:
        client.ping()
    finally:
        client.close()


# -- the message types and the consumers ---------------------------------------------------

@cache
def default_registry() -> Registry:
    """Built-in types, those of installed packages (entry points) and of
    ``INTEGRATION_TYPE_MODULES``, then one delivery type per consumer (``consumer.<name>``)
    and the webhook deliveries."""
    settings = get_settings()
    registry = load_types(Registry(builtin_types(run_action)), settings.type_modules)
    for subscription in default_subscriptions():
        registry.register(delivery_type(subscription))
    # Read once here, not per delivery: reading the settings is not free.
    legacy = settings.webhook_legacy_signature
    registry.register(webhook_type(default_webhooks, default_post, default_rights,
                                   legacy_signature=lambda: legacy))
    return registry


@cache
def default_subscriptions() -> tuple[Subscription, ...]:
    """The built-in loop stages that are enabled, plus installed and configured consumers."""
    settings = get_settings()
    stages = loop_subscriptions(settings.loop_stages, Stages(default_rules, default_evaluator))
    return tuple(load_subscriptions(settings.consumer_modules, stages))


#: The Celery router of producers with this configuration (``celeryconfig.task_routes``).
route_task = Router(default_registry)


def declared_queues(settings: Settings) -> list[Queue]:
    """Every queue as this process declares it (``celeryconfig.task_queues``): quorum queues
    when the settings ask for them and the broker is RabbitMQ, classic otherwise."""
    limit = settings.amqp_delivery_limit if settings.quorum_queues else None
    return declare_queues(default_registry(), delivery_limit=limit)


# -- the self-healing loop -----------------------------------------------------------------

@cache
def default_rules() -> Rules:
    return load_rules(get_settings().rules_file)


@cache
def default_evaluator() -> ThresholdEvaluator:
    settings = get_settings()
    return ThresholdEvaluator.from_settings(settings, store_from_settings(settings).client,
                                            default_rules())


@cache
def declared_targets() -> executors.Targets:
    """The action targets of the rules file; a file that fails to load is read again on the
    next use (a fixed file needs no restart)."""
    return executors.load_targets(get_settings())


@cache
def default_egress() -> Egress:
    """This process's way out, built from its settings on first use."""
    return egress_from_settings(get_settings())


def run_action(payload: ActionPayload, envelope: Envelope) -> dict[str, Any]:
    """The built-in ``action`` handler: the action on this process's declared targets."""
    return executors.run_action(payload, envelope, targets=declared_targets,
                                egress=default_egress)


# -- submitting, dispatching, guarding -----------------------------------------------------

def build_submitter(settings: Settings, origin: str, *, coalesce: int = 0,
                    replica_wait: bool = False) -> Submitter:
    """The submit path (registry, store, publisher) of a producer named ``origin``; with
    ``replica_wait``, the settings' wait for the store's replicas (the gateway's)."""
    # Producers never import tasks/: they send by task name with celeryconfig's settings.
    celery = create_celery(f"integration.{origin}")
    celery.conf.broker_url = settings.broker
    # Connect as these settings say too (a URL may name several RabbitMQ nodes).
    celery.conf.broker_connection_timeout = settings.publish_timeout_seconds
    celery.conf.broker_transport_options = {
        **celery.conf.broker_transport_options,
        "connect_retries_timeout": settings.broker_connect_seconds}
    # Declared as these settings say, even where celeryconfig was imported with others.
    celery.conf.task_queues = declared_queues(settings)
    # Through the sentinels, the broker is the store's master, opened the store's way.
    broker_client = redis_client(settings) if settings.sentinels and not settings.broker_url \
        else None
    publisher = Publisher(celery, settings.broker, timeout=settings.publish_timeout_seconds,
                          chunk_size=settings.publish_chunk_size, origin=origin,
                          client=broker_client)
    limits = JsonLimits(max_depth=settings.max_json_depth,
                        max_string=settings.max_string_length)
    store = store_from_settings(settings)
    wait = ReplicaWait(store.client, settings.key_prefix, settings.redis_replica_wait,
                       settings.redis_replica_wait_timeout_ms) \
        if replica_wait and settings.redis_replica_wait else None
    return Submitter(default_registry(), store, publisher,
                     retry_after=settings.retry_after_seconds, limits=limits,
                     max_queue_depth=settings.max_queue_depth, coalesce=coalesce,
                     replica_wait=wait)


def build_guards(settings: Settings, client: redis.Redis) -> Guards:
    limits_uri, limits_options = limits_storage(settings)
    return Guards(client, settings.key_prefix, GuardSettings(
        fail_max=settings.breaker_fail_max,
        reset_timeout=settings.breaker_reset_timeout_seconds,
        action_rate_limit=settings.action_rate_limit,
        loop_limit=settings.loop_limit,
        loop_window=settings.loop_window_seconds,
    ), cast(Storage, storage_from_string(limits_uri, **limits_options)))


def build_dispatcher(submitter: Submitter) -> Dispatcher:
    """Deliveries of result events to consumers and webhooks, and messages that handlers
    emit."""
    return Dispatcher(submitter, default_subscriptions(), default_webhooks(),
                      source=EVENT_SOURCE)


# -- webhooks and the rights of what subjects made -------------------------------------------

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
    egress = default_egress()
    timeout = get_settings().webhook_timeout_seconds

    def post(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        return egress.request("POST", url, body=body, headers=headers, timeout=timeout).status

    return post


def load_schedules(path: str | None) -> list[ScheduleSpec]:
    """The schedule file, validated against this process's message types (what beat loads
    at start, and what ``integration check`` checks)."""
    return load_schedule_file(path, build_submitter(get_settings(), origin="beat").parse)
