"""The Redis transport the worker uses (``integration.broker.kombu_redis``): kombu's, with one
client object per channel, doing kombu's unacked bookkeeping unchanged."""

from __future__ import annotations

import os
import subprocess
import sys

import redis
from kombu import Connection

from integration.broker.kombu_redis import Channel, Transport


def test_a_redis_broker_gets_the_transport_and_other_brokers_keep_kombus() -> None:
    """Also a URL given explicitly, as the gateway's publisher does: its scheme decides."""
    def transport_for(broker: str, explicit: str | None = None) -> str:
        return subprocess.run(
            [sys.executable, "-c", "import sys; from tasks.app import app; transport = "
             "app.connection_for_write(sys.argv[1] or None).transport; "
             "print(type(transport).__module__)", explicit or ""],
            env={**os.environ, "INTEGRATION_BROKER_URL": broker}, check=True,
            capture_output=True, text=True).stdout.strip()

    redis_url, amqp_url = "redis://127.0.0.1:1/3", "amqp://guest:guest@127.0.0.1:1//"
    assert transport_for(redis_url) == "integration.broker.kombu_redis"
    assert transport_for("rediss://127.0.0.1:1/3") == "integration.broker.kombu_redis"
    assert transport_for(amqp_url) == "kombu.transport.pyamqp"
    assert transport_for(redis_url, explicit=amqp_url) == "kombu.transport.pyamqp"
    assert transport_for(amqp_url, explicit=redis_url) == "integration.broker.kombu_redis"


def test_one_client_serves_every_operation_until_the_pool_is_replaced(redis_url: str) -> None:
    with Connection(redis_url, transport=Transport) as connection:
        channel = connection.default_channel
        assert isinstance(channel, Channel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second and first.connection_pool is channel.pool
        channel._disconnect_pools()  # what kombu does after a connection loss
        with channel.conn_or_acquire() as third:
            assert third is not first and third.connection_pool is channel.pool
            assert third.ping()


def test_delivered_messages_are_held_in_the_unacked_index_until_acknowledged(
        redis_url: str, redis_client: redis.Redis) -> None:
    """kombu's at-least-once bookkeeping, through the shared client: a delivered message is
    in the unacked hash and index (restored if its worker dies), and gone once acked."""
    with Connection(redis_url, transport=Transport) as connection:
        queue = connection.SimpleQueue("test-kombu-redis")
        try:
            queue.put({"n": 1})
            message = queue.get(timeout=5)
            assert message.payload == {"n": 1}
            tag = message.delivery_tag
            assert redis_client.hexists("unacked", tag)
            assert redis_client.zscore("unacked_index", tag) is not None
            message.ack()
            assert not redis_client.hexists("unacked", tag)
            assert redis_client.zscore("unacked_index", tag) is None
        finally:
            queue.clear()
            queue.close()
