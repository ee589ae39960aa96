"""Redis with Sentinel on hosts of ``tests/support/netns.py``: a redis-server and a sentinel
in each host, bound to its address, with timers short enough for a failover in seconds, and
what the sentinels and the servers say about who the master is."""

from __future__ import annotations

from pathlib import Path

import redis

from integration.ops.embedded_redis import redis_server_binary
from tests.support.netns import Hosts, wait_listening

REDIS_PORT, SENTINEL_PORT = 6379, 26379
REDIS_HOSTS = ("r1", "r2", "r3")
MASTER_NAME = "hosts"


def start_redis(hosts: Hosts, name: str, directory: Path, master: str | None) -> None:
    """A redis-server in host ``name``, a replica of ``master`` unless None."""
    data = directory / name
    data.mkdir(exist_ok=True)
    replicating = ["--replicaof", master, str(REDIS_PORT)] if master else []
    server = hosts.run_in(name, [
        redis_server_binary(), "--port", str(REDIS_PORT), "--bind", hosts.address(name),
        "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", str(data),
        "--repl-diskless-sync-delay", "0", *replicating], {}, f"{name}-redis.log")
    wait_listening(hosts.address(name), REDIS_PORT, server, f"redis-server in {name}")


def start_sentinel(hosts: Hosts, name: str, directory: Path, master: str) -> None:
    """A sentinel in host ``name`` watching ``master`` (quorum 2), with short timers."""
    config = directory / name / "sentinel.conf"
    config.write_text(
        f"port {SENTINEL_PORT}\nbind {hosts.address(name)}\nprotected-mode no\n"
        f"dir {directory / name}\n"
        f"sentinel monitor {MASTER_NAME} {master} {REDIS_PORT} 2\n"
        f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
        f"sentinel failover-timeout {MASTER_NAME} 2000\n")
    process = hosts.run_in(name, [redis_server_binary(), str(config), "--sentinel"], {},
                           f"{name}-sentinel.log")
    wait_listening(hosts.address(name), SENTINEL_PORT, process, f"sentinel in {name}")


def _sentinel(hosts: Hosts, name: str) -> redis.Redis:
    return redis.Redis(host=hosts.address(name), port=SENTINEL_PORT, socket_timeout=0.3,
                       socket_connect_timeout=0.3, decode_responses=True)


def sentinels_master(hosts: Hosts, names: tuple[str, ...] = REDIS_HOSTS) -> str | None:
    """The master's address when the sentinels in hosts ``names`` all name the same."""
    named = set()
    for name in names:
        try:
            with _sentinel(hosts, name) as client:
                named.add(str(client.sentinel_get_master_addr_by_name(MASTER_NAME)[0]))
        except (redis.RedisError, TypeError):
            return None
    return named.pop() if len(named) == 1 else None


def sentinels_ready(hosts: Hosts) -> bool:
    """Every sentinel knows the two others and two replicas in sync with the master."""
    for name in REDIS_HOSTS:
        try:
            with _sentinel(hosts, name) as client:
                master = client.sentinel_master(MASTER_NAME)
                replicas = client.sentinel_slaves(MASTER_NAME)
        except redis.RedisError:
            return False
        if int(master.get("num-other-sentinels", 0)) != 2 or sum(
                r.get("master-link-status") == "ok" and "down" not in str(r.get("flags"))
                for r in replicas) != 2:
            return False
    return True


def replicating(hosts: Hosts, name: str, master: str) -> bool:
    """Whether the redis-server in host ``name`` is an in-sync replica of ``master``."""
    try:
        with redis.Redis(host=hosts.address(name), port=REDIS_PORT, socket_timeout=0.3,
                         socket_connect_timeout=0.3, decode_responses=True) as client:
            info = client.info("replication")
    except redis.RedisError:
        return False
    return bool(info.get("role") == "slave" and info.get("master_host") == master
                and info.get("master_link_status") == "up")
