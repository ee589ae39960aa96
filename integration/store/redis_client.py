"""The one way the service opens its Redis: ``INTEGRATION_REDIS_URL`` directly, or the master
that the sentinels name (``INTEGRATION_REDIS_SENTINELS``), followed across a failover.

Through the sentinels, a connection asks them for the master's address each time it connects,
and one still open to a master that became a replica fails on its first write (``READONLY``)
and is replaced, so every client made here follows a failover without a restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.connection import SSLConnection, parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

if TYPE_CHECKING:
    from integration.settings import Settings

#: What the URL says about the server itself, which the sentinels say instead.
_SERVER_KEYS = ("host", "port", "path", "connection_class")


def redis_client(settings: Settings, *, timeout: float | None = None,
                 socket_timeout: float | None = None, health_check_interval: float = 30,
                 retries: int = 0) -> redis.Redis:
    """A client of the store's Redis: connect and reads bounded by ``timeout`` (the publish
    timeout unless given; ``socket_timeout`` for reads that block longer), idle connections
    checked after ``health_check_interval`` (0: never; through the sentinels, at most
    their setting), no silent retries unless ``retries`` (a write either lands once or
    fails to the caller, whose own policy decides what happens next)."""
    timeout = settings.publish_timeout_seconds if timeout is None else timeout
    options: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout if socket_timeout is None else socket_timeout,
        "retry": Retry(NoBackoff(), retries),
    }
    if not settings.sentinels:
        return redis.Redis.from_url(settings.redis_url,
                                    health_check_interval=health_check_interval, **options)
    options["health_check_interval"] = min(health_check_interval,
                                           settings.redis_health_check_interval_seconds)
    return sentinel_of(settings, timeout=timeout).master_for(settings.redis_sentinel_master,
                                            **master_options(settings), **options)


def sentinel_of(settings: Settings, *, timeout: float | None = None) -> Sentinel:
    """The sentinels of ``settings``, each asked within ``timeout`` (the publish timeout
    unless given)."""
    timeout = settings.publish_timeout_seconds if timeout is None else timeout
    return Sentinel(settings.sentinels, sentinel_kwargs=_sentinel_kwargs(settings, timeout))


def _sentinel_kwargs(settings: Settings, timeout: float) -> dict[str, Any]:
    """How each sentinel is asked: within ``timeout``, once (redis-py would retry with a
    backoff of seconds, and asks the next sentinel only then: a host cut off would stall
    every lookup of the master), with the sentinels' own password."""
    kwargs: dict[str, Any] = {"socket_connect_timeout": timeout, "socket_timeout": timeout,
                              "retry": Retry(NoBackoff(), 0)}
    if settings.redis_sentinel_password is not None:
        kwargs["password"] = settings.redis_sentinel_password.get_secret_value()
    return kwargs


def master_options(settings: Settings) -> dict[str, Any]:
    """What ``INTEGRATION_REDIS_URL`` says besides the server: database, user, password, TLS."""
    options = {k: v for k, v in parse_url(settings.redis_url).items() if k not in _SERVER_KEYS}
    if parse_url(settings.redis_url).get("connection_class") is SSLConnection:
        options["ssl"] = True
    return options


def broker_sentinel_options(settings: Settings) -> dict[str, Any]:
    """kombu's transport options for the master behind the sentinels (``sentinel://``): its
    name, the sentinels' own password and timeouts, and a health check short enough that a
    consumer notices a vanished master within seconds."""
    sentinel_kwargs = _sentinel_kwargs(settings, settings.publish_timeout_seconds)
    return {"master_name": settings.redis_sentinel_master, "sentinel_kwargs": sentinel_kwargs,
            "health_check_interval": settings.redis_health_check_interval_seconds}


def redbeat_sentinel_options(settings: Settings) -> dict[str, Any]:
    """redbeat's client options for the master behind the sentinels (with its
    ``redis-sentinel://`` URL)."""
    master = master_options(settings)
    options = {"sentinels": settings.sentinels, "service_name": settings.redis_sentinel_master,
               "db": master.get("db", 0), "password": master.get("password"),
               "sentinel_kwargs": broker_sentinel_options(settings)["sentinel_kwargs"]}
    if master.get("username"):
        options["username"] = master["username"]
    return options


def describe(settings: Settings) -> str:
    """Where the store is, for messages and checks (never a password)."""
    if settings.sentinels:
        hosts = ",".join(f"{host}:{port}" for host, port in settings.sentinels)
        return f"master {settings.redis_sentinel_master!r} of sentinels {hosts}"
    return settings.redis_url.rpartition("@")[2]


def limits_storage(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The storage URI and options of the ``limits`` library (rate limits) for the store's
    Redis: its ``redis+sentinel://`` storage, on the master only, through the sentinels."""
    if not settings.sentinels:
        return settings.redis_url, {}
    hosts = ",".join(f"{host}:{port}" for host, port in settings.sentinels)
    timeout = settings.publish_timeout_seconds
    # ``limits`` would give the sentinels the data's credentials otherwise.
    sentinel_kwargs = {"username": None, "password": None,
                       **_sentinel_kwargs(settings, timeout)}
    options = {k: v for k, v in master_options(settings).items() if v is not None}
    return (f"redis+sentinel://{hosts}/{settings.redis_sentinel_master}",
            {**options, "sentinel_kwargs": sentinel_kwargs, "use_replicas": False,
             "socket_connect_timeout": timeout, "socket_timeout": timeout,
             "health_check_interval": settings.redis_health_check_interval_seconds})
