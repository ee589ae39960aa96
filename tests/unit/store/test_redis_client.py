"""Every Redis connection derived from one setting: the URL alone, or the sentinels with the
URL's database and credentials (no server is reached here)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from redis.sentinel import SentinelConnectionPool

from integration.schedules.store import redbeat_options, redbeat_url
from integration.security.secrets import weak_secrets
from integration.settings import Settings
from integration.store.redis_client import (
    broker_sentinel_options,
    describe,
    limits_storage,
    redis_client,
)

SECRET = "s" * 48


def sentinel_settings(**values: object) -> Settings:
    return Settings(**{"jwt_secret": SECRET, "redis_url": "redis://app:data-pw@ignored:1/3",
                       "redis_sentinels": "10.0.0.1:26379, 10.0.0.2:26380,[::1]:26381",
                       "redis_sentinel_master": "primary",
                       "redis_sentinel_password": "sentinel-pw", **values})


def test_without_sentinels_the_url_is_the_server_as_before() -> None:
    """Unset, the store's client and the broker are ``INTEGRATION_REDIS_URL`` itself."""
    settings = Settings(jwt_secret=SECRET, redis_url="redis://127.0.0.1:6390/2")
    client = redis_client(settings)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6390, 2)
    assert settings.broker == settings.redis_url and settings.sentinels == []
    assert limits_storage(settings) == (settings.redis_url, {})
    assert redbeat_url(settings) == settings.redis_url
    assert "sentinels" not in redbeat_options(settings)


def test_the_sentinels_are_parsed_and_a_bad_address_is_named() -> None:
    assert sentinel_settings().sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26380),
                                             ("::1", 26381)]
    with pytest.raises(ValidationError, match="'10.0.0.1' is not host:port"):
        sentinel_settings(redis_sentinels="10.0.0.1")
    assert Settings(jwt_secret=SECRET, redis_sentinels=" ").sentinels == []


def test_the_client_asks_the_sentinels_for_the_master_with_the_urls_database() -> None:
    """The master of the named service, with the URL's database, user and password; the
    sentinels with their own password."""
    settings = sentinel_settings()
    pool = redis_client(settings).connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "primary"
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (3, "app", "data-pw")
    assert "host" not in kwargs
    assert kwargs["socket_timeout"] == settings.publish_timeout_seconds
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["password"] for s in sentinels] == \
        ["sentinel-pw"] * 3


def test_the_broker_is_kombus_sentinel_url_of_the_same_master() -> None:
    settings = sentinel_settings()
    assert settings.broker == ("sentinel://app:data-pw@10.0.0.1:26379/3;"
                               "sentinel://app:data-pw@10.0.0.2:26380/3;"
                               "sentinel://app:data-pw@[::1]:26381/3")
    options = broker_sentinel_options(settings)
    assert options["master_name"] == "primary"
    assert options["sentinel_kwargs"]["password"] == "sentinel-pw"
    assert options["health_check_interval"] == 2
    assert sentinel_settings(broker_url="amqp://rabbit//").broker == "amqp://rabbit//"


def test_rate_limits_use_limits_sentinel_storage_on_the_master() -> None:
    uri, options = limits_storage(sentinel_settings())
    assert uri == "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380,::1:26381/primary"
    assert options["db"] == 3 and options["password"] == "data-pw"
    assert options["use_replicas"] is False
    # ``limits`` would otherwise hand the data's password to the sentinels.
    assert options["sentinel_kwargs"]["password"] == "sentinel-pw"
    assert options["sentinel_kwargs"]["username"] is None


def test_redbeat_gets_its_sentinel_options() -> None:
    settings = sentinel_settings()
    options = redbeat_options(settings)
    assert redbeat_url(settings) == "redis-sentinel://"
    assert options["service_name"] == "primary" and options["db"] == 3
    assert options["password"] == "data-pw" and options["username"] == "app"
    assert options["sentinel_kwargs"]["password"] == "sentinel-pw"


def test_the_sentinel_password_is_judged_and_never_described() -> None:
    settings = sentinel_settings(redis_sentinel_password="changeme")
    assert "INTEGRATION_REDIS_SENTINEL_PASSWORD" in [w.variable for w in weak_secrets(settings)]
    assert "pw" not in describe(settings) and "primary" in describe(settings)


def test_every_connect_and_read_is_bounded() -> None:
    """A link that drops packets costs a timeout, never a hang: to the master and to the
    sentinels, for the store, rate limits, the broker's sentinels and redbeat."""
    settings = sentinel_settings()
    bounded = {"socket_connect_timeout", "socket_timeout"}
    pool = redis_client(settings).connection_pool
    assert all(pool.connection_kwargs[k] for k in bounded)
    for node in pool.sentinel_manager.sentinels:
        assert all(node.connection_pool.connection_kwargs[k] for k in bounded)
    _, options = limits_storage(settings)
    assert all(options[k] and options["sentinel_kwargs"][k] for k in bounded)
    assert all(broker_sentinel_options(settings)["sentinel_kwargs"][k] for k in bounded)
    beat = redbeat_options(settings)
    assert beat["socket_timeout"] and all(beat["sentinel_kwargs"][k] for k in bounded)


def test_each_sentinel_is_asked_once_before_the_next() -> None:
    """A sentinel that does not answer is not asked again with a backoff of seconds: the
    lookup of the master goes on to the next one (a sentinel's host cut off)."""
    settings = sentinel_settings()
    pool = redis_client(settings).connection_pool
    kwargs = [node.connection_pool.connection_kwargs for node in pool.sentinel_manager.sentinels]
    kwargs += [limits_storage(settings)[1]["sentinel_kwargs"],
               broker_sentinel_options(settings)["sentinel_kwargs"],
               redbeat_options(settings)["sentinel_kwargs"]]
    assert all(k["retry"].get_retries() == 0 for k in kwargs)
