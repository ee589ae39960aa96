"""Celery settings for workers, beat and the gateway's producer, derived from the settings module.

Check that it imports with ``python -m celeryconfig``.
"""

from __future__ import annotations

from integration.app import declared_queues, default_registry, get_settings, route_task
from integration.broker.kombu_redis import use_for_redis_urls
from integration.messages.routing import DEFAULT_QUEUE
from integration.schedules.store import beat_key_prefix, redbeat_options, redbeat_url
from integration.security.secrets import refuse_weak_secrets
from integration.store.redis_client import broker_sentinel_options
from integration.worker.recovery import check_durations, check_recovery_bound

_settings = get_settings()
# Workers, beat and Flower refuse placeholder and low-entropy secrets in production (their
# Redis or broker password, Flower's login), as the gateway does.
refuse_weak_secrets(_settings)
# Workers, beat and producers refuse a configuration whose duplicate guards expire too soon.
check_durations(_settings, default_registry())
# ... and settings whose recovery after a fault (the reconciler's bound) exceeds the promise.
check_recovery_bound(_settings)

# Redis URLs get kombu's Redis transport without a new client object per unacked-index update.
use_for_redis_urls()
broker_url = _settings.broker
broker_connection_retry_on_startup = True
# A publish must never hang the gateway (celery #3957, #4296): bounded connect and retries.
broker_connection_timeout = _settings.publish_timeout_seconds
# RabbitMQ: a worker on a node whose host went silent reconnects to another node of the URL
# after two missed heartbeats (with Celery's default, 120 s, it would wait four minutes).
broker_heartbeat = _settings.amqp_heartbeat_seconds
broker_transport_options = {
    "visibility_timeout": _settings.visibility_timeout_seconds,
    # Redis: how often workers look for messages whose worker died holding them (returned
    # once older than the visibility timeout); every sweep scans (no extra throttle).
    "unacked_restore_interval": _settings.unacked_restore_interval_seconds,
    "unacked_restore_throttle": 1,
    "socket_timeout": _settings.publish_timeout_seconds,
    "socket_connect_timeout": _settings.publish_timeout_seconds,
    "confirm_publish": True,  # RabbitMQ: wait for the broker's confirm before reporting success
    # A URL naming several RabbitMQ nodes (``amqp://a;amqp://b``): a connection made on demand
    # may try each of them once; kombu's default total is one connect timeout, spent on the
    # first node when that one is cut off.
    "connect_retries_timeout": _settings.broker_connect_seconds,
}
task_publish_retry_policy = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
if _settings.sentinels and not _settings.broker_url:
    # The master behind the sentinels: kombu asks them for its address at every connect, and
    # a consumer on a master that vanished without a word notices within the health check.
    broker_transport_options.update(broker_sentinel_options(_settings))
    # A publish outlasts a failover (the sentinels' detection and election) instead of
    # failing within a second; every try is still bounded by the socket timeouts.
    task_publish_retry_policy = {
        "max_retries": max(2, int(_settings.redis_failover_seconds)),
        "interval_start": 0,
        "interval_step": 0.5,
        "interval_max": 1.0,
    }

# JSON only: a pickled message pushed into the broker is never deserialized.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
event_serializer = "json"

# Results live in the status store, so Celery's result backend is not needed.
task_ignore_result = True
result_backend = None

# No loss: ack after the task ran; a killed child's message is redelivered, not acked.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# True crashes the worker on a broker connection loss with Celery 5.7 on Redis ("Unrecoverable
# error: AttributeError ... 'hostname'", celery #9250; reproduced by test_broker_faults.py).
# With False a task running through the outage finishes, its message may be delivered again,
# and the delivery claim and the finished status keep its effect to one.
worker_cancel_long_running_tasks_on_connection_loss = False

# RabbitMQ refuses a queue declared again with other arguments (PRECONDITION_FAILED): every
# process declares them from the same settings (INTEGRATION_AMQP_QUEUE_TYPE). With quorum
# queues Celery turns off global QoS by itself (worker_detect_quorum_queues).
task_queues = declared_queues(_settings)
task_default_queue = DEFAULT_QUEUE
task_routes = (route_task,)

# Flower and celery events: the dev stack and compose start workers with --task-events; any
# other worker reports its tasks once a monitor enables events (Flower sends
# ``enable_events`` every few seconds), or from the start with INTEGRATION_TASK_EVENTS.
# With nobody listening, events would cost the process that fetches and acknowledges every
# message about a tenth of its throughput for nothing. "task-sent" events would cost a publish
# per message; acceptance is recorded in the status store instead.
worker_send_task_events = _settings.task_events
task_send_sent_event = False
# ... published in batches (tasks/consumer.py): one PUBLISH per 0.1 s or 24 events, instead of
# one per event (three per message) on the process that fetches and acknowledges messages.
worker_consumer = "tasks.consumer:Consumer"

if _settings.worker_concurrency:
    worker_concurrency = _settings.worker_concurrency

# Logging is configured by the service (tasks/observability.py, setup_logging): Celery must
# not replace the root logger's handlers, or its records would leave the JSON shape.
worker_hijack_root_logger = False

timezone = "UTC"
enable_utc = True

# Beat: schedules live in Redis (celery-redbeat), so run-time changes reach beat at its next
# loop and beat keeps no local state; a lock makes one beat of several the active one.
beat_scheduler = "tasks.beat:Scheduler"
beat_max_loop_interval = _settings.beat_max_loop_interval_seconds
redbeat_redis_url = redbeat_url(_settings)
redbeat_key_prefix = beat_key_prefix(_settings.key_prefix)
redbeat_lock_timeout = _settings.beat_lock_timeout_seconds
redbeat_redis_options = redbeat_options(_settings)

if __name__ == "__main__":
    print(f"celeryconfig OK: broker {broker_url.split('@')[-1]}, queues "
          + ", ".join(q.name for q in task_queues))
