"""Checks that reach the deployment: the store's and the broker's Redis (or RabbitMQ), their
persistence, the ledger of unfinished messages, and queues that no worker consumes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from integration.mistakes import redis_refused
from integration.ops.checks.findings import (
    Context,
    Finding,
    error,
    error_once,
    ok,
    shown,
    warning,
)

if TYPE_CHECKING:
    import redis

#: The most stranded records listed one by one.
_STRANDED_SHOWN = 20


def check_store(ctx: Context) -> Iterator[Finding]:
    if ctx.settings.sentinels:
        yield from _check_sentinels(ctx)
        return
    yield from _check_redis(ctx, "store", "INTEGRATION_REDIS_URL", ctx.settings.redis_url)


def check_broker(ctx: Context) -> Iterator[Finding]:
    settings = ctx.settings
    url = settings.broker
    if settings.amqp_queue_type == "quorum" and not settings.quorum_queues:
        yield warning("broker", "INTEGRATION_AMQP_QUEUE_TYPE=quorum is ignored: the broker is "
                                "not RabbitMQ")
    if url == settings.redis_url and "store" in ctx.groups:
        yield ok("broker", "the store's Redis (INTEGRATION_BROKER_URL is not set)")
        return
    if settings.sentinels and not settings.broker_url:
        if "store" in ctx.groups:
            yield ok("broker", "the store's master through the sentinels "
                               "(INTEGRATION_BROKER_URL is not set)")
        else:
            yield from _check_sentinels(ctx, "broker")
        return
    variable = "INTEGRATION_BROKER_URL" if settings.broker_url else "INTEGRATION_REDIS_URL"
    if urlsplit(url).scheme in ("redis", "rediss", "unix"):
        yield from _check_redis(ctx, "broker", variable, url)
        return
    from kombu import Connection

    with Connection(url, connect_timeout=ctx.timeout) as connection:
        try:
            connection.ensure_connection(max_retries=0, timeout=ctx.timeout)
        except Exception as exc:  # noqa: BLE001 - every transport raises its own errors
            yield error("broker", f"{variable} {shown(url)} does not answer within "
                                  f"{ctx.timeout:g} s: {type(exc).__name__}: {exc}")
            return
        yield ok("broker", f"{variable} {shown(url)} answers")
        try:
            yield from _queue_types(ctx, connection)
        except Exception as exc:  # noqa: BLE001 - reported, as the connection's errors are
            yield error("broker", f"the queues' types cannot be checked: "
                                  f"{type(exc).__name__}: {exc}")


def _queue_types(ctx: Context, connection: Any) -> Iterator[Finding]:
    """RabbitMQ: every existing queue of the service has the arguments these settings declare
    it with (queue type, delivery limit); a queue of another type makes every worker and the
    gateway fail to declare it. A passive declare cannot tell the type, so each existing queue
    is declared again with the expected arguments: the broker refuses a difference."""
    from integration.app import declared_queues, default_registry

    settings = ctx.settings
    if settings.quorum_queues:
        largest = max((t.retry.max_attempts if t.retry else settings.retry_max_attempts)
                      for t in default_registry())
        if settings.amqp_delivery_limit < largest:
            yield warning("broker", f"INTEGRATION_AMQP_DELIVERY_LIMIT "
                                    f"({settings.amqp_delivery_limit}) is below the largest "
                                    f"attempt limit of a message type ({largest}): RabbitMQ "
                                    "dead-letters a message that keeps killing workers before "
                                    "the service counts its attempts out")
    differing, existing = [], 0
    for queue in declared_queues(settings):
        channel = connection.channel()
        try:
            channel.queue_declare(queue=queue.name, passive=True)
        except connection.channel_errors:
            continue  # not declared yet: the first worker or publish declares it
        existing += 1
        try:
            queue.bind(channel).queue_declare()  # its flags and arguments, as Celery's
        except connection.channel_errors as exc:
            differing.append(f"{queue.name} ({getattr(exc, 'reply_text', exc)})")
            continue
        channel.close()
    want = settings.amqp_queue_type if settings.quorum_queues else "classic"
    for problem in differing:
        yield error("broker", f"queue {problem}: it was declared otherwise than "
                              f"INTEGRATION_AMQP_QUEUE_TYPE={want} declares it; delete it once "
                              "drained (docs/operations.md, quorum queues)")
    if not differing:
        yield ok("broker", f"{existing} existing queues are {want} queues as declared")


def _check_sentinels(ctx: Context, check: str = "store") -> Iterator[Finding]:
    """The sentinels answer and agree on a master, which answers as a store must."""
    import redis
    from redis.sentinel import MasterNotFoundError

    from integration.store.redis_client import describe, redis_client, sentinel_of

    settings = ctx.settings
    name = settings.redis_sentinel_master
    sentinel = sentinel_of(settings, timeout=ctx.timeout)
    answering = 0
    for node in sentinel.sentinels:
        try:
            node.ping()
            answering += 1
        except redis.AuthenticationError as exc:
            yield error(check, f"INTEGRATION_REDIS_SENTINELS: a sentinel refused the "
                               f"password (INTEGRATION_REDIS_SENTINEL_PASSWORD): {exc}")
        except redis.RedisError as exc:
            yield warning(check, f"INTEGRATION_REDIS_SENTINELS: a sentinel does not answer "
                                 f"within {ctx.timeout:g} s: {exc}")
        finally:
            node.close()
    try:
        host, port = sentinel.discover_master(name)
        replicas = sentinel.discover_slaves(name)
    except (MasterNotFoundError, redis.RedisError) as exc:
        yield error(check, f"INTEGRATION_REDIS_SENTINELS: no master {name!r} "
                           f"(INTEGRATION_REDIS_SENTINEL_MASTER): {exc}")
        return
    total = len(sentinel.sentinels)
    message = (f"{answering} of {total} sentinels answer; master {name!r} is {host}:{port} "
               f"with {len(replicas)} replica(s)")
    if replicas and answering * 2 > total:
        yield ok(check, message)
    else:
        yield warning(check, message + ": a failover needs a replica and a majority of "
                                       "the sentinels")
    where = f"INTEGRATION_REDIS_URL through the {describe(settings)}"
    client = redis_client(settings, timeout=ctx.timeout)
    try:
        client.ping()
        yield ok(check, f"{where} answers")
        yield from _persistence(ctx, check, where, client)
    except redis.AuthenticationError as exc:
        yield error(check, f"{where}: {redis_refused(exc, settings)}")
    except redis.RedisError as exc:
        yield error(check, f"{where} does not answer within {ctx.timeout:g} s: {exc}")
    finally:
        client.close()


def _check_redis(ctx: Context, check: str, variable: str, url: str) -> Iterator[Finding]:
    import redis

    where = f"{variable} {shown(url)}"
    client = redis.Redis.from_url(url, socket_connect_timeout=ctx.timeout,
                                  socket_timeout=ctx.timeout)
    try:
        client.ping()
        yield ok(check, f"{where} answers")
        yield from _persistence(ctx, check, where, client)
    except redis.AuthenticationError as exc:
        yield error(check, f"{where}: "
                           f"{redis_refused(exc, ctx.settings, variable=variable, url=url)}")
    except redis.RedisError as exc:
        yield error(check, f"{where} does not answer within {ctx.timeout:g} s: {exc}")
    finally:
        client.close()


def _persistence(ctx: Context, check: str, where: str, client: redis.Redis) -> Iterator[Finding]:
    """Queued messages and status records survive a restart and are never evicted."""
    import redis

    persistence: dict[str, Any] = client.info("persistence")  # type: ignore[assignment]
    memory: dict[str, Any] = client.info("memory")  # type: ignore[assignment]
    aof = int(persistence.get("aof_enabled", 0)) == 1
    try:
        config: dict[str, Any] = client.config_get("save")  # type: ignore[assignment]
        save: str | None = str(config.get("save", ""))
    except redis.ResponseError:
        save = None  # managed Redis services often refuse CONFIG
    if aof:
        yield ok(check, f"{where} persists with AOF (appendonly yes)")
    elif save:
        yield ok(check, f"{where} persists with RDB snapshots (save {save}); AOF loses less")
    elif save is None:
        yield warning(check, f"{where} has AOF off and refuses CONFIG GET save, so RDB "
                             "snapshots cannot be seen: make sure it persists, or a restart "
                             "loses the queues")
    else:
        yield warning(check, f"{where} has neither AOF nor RDB snapshots: a restart loses the "
                             "queues and the status records (set appendonly yes)")
    policy = str(memory.get("maxmemory_policy", "unknown"))
    if policy == "noeviction":
        yield ok(check, f"{where} never evicts keys (maxmemory-policy noeviction)")
        return
    message = (f"{where} has maxmemory-policy {policy}: when memory runs out it may silently "
               "drop queued messages, claims and status records; set maxmemory-policy "
               "noeviction")
    if ctx.settings.env == "production":
        yield error(check, message)
    else:
        yield warning(check, message + " (an error with INTEGRATION_ENV=production)")


def check_ledger(ctx: Context) -> Iterator[Finding]:
    """Records that are not final and that nothing holds now: no queue, live worker, claim
    or due entry (the reconciler of a running worker sends them again)."""
    import redis

    from integration.app import build_submitter
    from integration.broker.holdings import holdings_of
    from integration.settings import ConfigurationError
    from integration.worker.heartbeats import Heartbeats
    from integration.worker.reconciler import Reconciler
    from integration.worker.recovery import heartbeat_ttl, leader_lease

    settings = ctx.settings
    if any(f.level == "error" and f.check in ("store", "broker") for f in ctx.earlier):
        return  # already reported: the ledger cannot be read
    try:
        submitter = build_submitter(settings, origin="check")
        store = submitter.store
        survey = Reconciler(
            store, holdings_of(submitter.publisher), Heartbeats(store.client, settings.key_prefix),
            instance="check", interval=settings.reconcile_interval_seconds,
            stale_after=settings.reconcile_after_seconds,
            heartbeat_ttl=heartbeat_ttl(settings), lease=leader_lease(settings)).survey()
    except (redis.RedisError, OSError) as exc:
        yield error("ledger", f"the ledger cannot be read: {type(exc).__name__}: {exc}")
        return
    except ConfigurationError as exc:  # the Celery configuration refuses (reported above)
        yield error_once(ctx, "ledger", str(exc), "the ledger is not read",
                         f"the ledger is not read: {exc}")
        return
    after = f"{settings.reconcile_after_seconds:g}"
    if not survey.stranded:
        yield ok("ledger", f"{survey.checked} unfinished records unchanged for {after} s or "
                           "more, each held by a queue, a live worker, a claim or the due set")
        return
    for stranded in survey.stranded[:_STRANDED_SHOWN]:
        entry = stranded.entry
        yield warning("ledger", f"stranded: {entry.id} ({entry.type}, {entry.status} since "
                                f"{entry.updated_at}) is {stranded.reason}; a running "
                                "worker's reconciler sends it again")
    if len(survey.stranded) > _STRANDED_SHOWN:
        yield warning("ledger", f"... and {len(survey.stranded) - _STRANDED_SHOWN} more "
                                "stranded records")


def check_queues(ctx: Context) -> Iterator[Finding]:
    """Messages waiting in a queue that no live worker consumes, by the queues each worker
    names in its heartbeat (on Redis a consumer is a blocking pop the broker does not count,
    and a broadcast to the workers cannot tell a slow reply from none)."""
    import redis

    from integration.app import build_submitter, default_registry
    from integration.messages.routing import CELERY_QUEUE, DEAD_LETTER_QUEUE, queue_names
    from integration.worker.heartbeats import Heartbeats
    from integration.worker.queues import unconsumed

    settings = ctx.settings
    if any(f.level == "error" and f.check in ("store", "broker", "durations")
           for f in ctx.earlier):
        return  # already reported: the queues cannot be read
    try:
        submitter = build_submitter(settings, origin="check")
        consumers = Heartbeats(submitter.store.client, settings.key_prefix).consumers()
        # With quorum queues, also the dead-letter queue: its messages wait to be recorded dead.
        declared = [*queue_names(default_registry()),
                    *([DEAD_LETTER_QUEUE] if settings.quorum_queues else [])]
        queues = list(dict.fromkeys([*declared, *sorted(consumers)]))
        depths = submitter.publisher.queue_depths(queues)
    except (redis.RedisError, OSError) as exc:
        yield error("queues", f"the queues cannot be read: {type(exc).__name__}: {exc}")
        return
    waiting = unconsumed(depths, consumers)
    for queue, count in waiting.items():
        why = (" (Celery's default queue: a producer without this configuration sends there, "
               "and a worker consuming it passes each message on)"
               if queue == CELERY_QUEUE else "")
        yield warning("queues", f"{count} message(s) wait in queue {queue}, which no live "
                                f"worker consumes{why}: start a worker with -Q {queue}")
    if not waiting:
        yield ok("queues", f"every queue holding messages has a live consumer ({len(queues)} "
                           f"queues, {sum(bool(consumers.get(q)) for q in queues)} consumed)")
