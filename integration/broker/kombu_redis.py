"""kombu's Redis transport, with one client object per channel instead of one per operation.

kombu's Redis channel builds a new ``redis.Redis`` for every update of its unacked index: once
when a message is delivered and once when it is acknowledged, two per message in a worker's
main process, the process that limits a worker's throughput. A client object holds no
connection (each command takes one from the channel's pool), but building one copies
redis-py's table of response callbacks (redis-py issue #3624), a noticeable part of the main
process's work per message. This channel builds its client once per pool and reuses it;
kombu replaces the pool after a connection loss, and then the client with it.

``celeryconfig`` calls ``use_for_redis_urls``: a ``redis://`` or ``rediss://`` URL then gets this
transport in that process, whoever opens it (the worker, beat, the gateway, Flower); every other
scheme keeps kombu's, also a URL given explicitly to ``connection_for_write``.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the event loop's client, already built once (``Channel.client``)
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


def use_for_redis_urls() -> None:
    """Resolve the ``redis`` and ``rediss`` URL schemes to this transport (kombu's registry of
    transport names), in this process."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
