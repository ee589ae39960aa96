"""The replica wait on its own: a Redis without replicas, or none at all, is not replicated."""

from __future__ import annotations

import pytest
import redis

from integration.ops.embedded_redis import EmbeddedRedis, free_port
from integration.settings import Settings
from integration.store.replication import ReplicaWait


def test_a_master_without_replicas_is_not_replicated(private_redis: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(private_redis.url)
    wait = ReplicaWait(client, "integration", replicas=1, timeout_ms=50)
    assert wait.replicated() is False
    assert client.exists("integration:replication:mark")  # the write it waited for
    client.close()


def test_an_unreachable_store_is_not_replicated() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    assert ReplicaWait(client, "integration", replicas=1, timeout_ms=50).replicated() is False


def test_a_wait_needs_a_replica_and_a_timeout() -> None:
    with pytest.raises(ValueError, match="at least one replica"):
        ReplicaWait(redis.Redis(), "integration", replicas=0, timeout_ms=50)


def test_the_timeout_stays_below_the_store_calls_bound() -> None:
    """A longer wait would be cut short by the store's socket timeout, as a lost reply."""
    with pytest.raises(ValueError, match="REPLICA_WAIT_TIMEOUT_MS"):
        Settings(redis_replica_wait=1, redis_replica_wait_timeout_ms=3000,
                 publish_timeout_seconds=3)
    assert Settings(redis_replica_wait=0, redis_replica_wait_timeout_ms=3000,
                    publish_timeout_seconds=3).redis_replica_wait == 0
