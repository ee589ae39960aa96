"""A Redis Sentinel group on loopback for failover tests: a master, a replica and three
sentinels, each a ``redis-server`` process of the test's own on a free port, with detection
and failover timeouts of about a second."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from integration.ops.embedded_redis import EmbeddedRedis, free_port, redis_server_binary

MASTER_NAME = "testmaster"
SENTINELS = 3
#: A replica's first sync starts at once (Redis waits 5 s for more replicas by default).
_PROMPT = ("--repl-diskless-sync-delay", "0")


class SentinelGroup:
    """Master and replica (``EmbeddedRedis``), and sentinels that watch them (quorum 2)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.master = EmbeddedRedis(directory / "a", persistent=False, extra_args=_PROMPT).start()
        self.replica = self._replica_of(self.master, directory / "b")
        self.sentinel_ports = [free_port() for _ in range(SENTINELS)]
        self.sentinels = [self._sentinel(port) for port in self.sentinel_ports]
        self._wait_ready()

    @staticmethod
    def _replica_of(master: EmbeddedRedis, directory: Path,
                    port: int | None = None) -> EmbeddedRedis:
        return EmbeddedRedis(directory, port=port, persistent=False, extra_args=(
            *_PROMPT, "--replicaof", "127.0.0.1", str(master.port))).start()

    @property
    def addresses(self) -> str:
        """``INTEGRATION_REDIS_SENTINELS``."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def _sentinel(self, port: int) -> subprocess.Popen[bytes]:
        config = self.directory / f"sentinel-{port}.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 3000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n")
        return subprocess.Popen([redis_server_binary(), str(config), "--sentinel"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)

    def _ask(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5,
                           decode_responses=True)

    def master_port(self) -> int | None:
        """The master's port, when every sentinel names the same one."""
        named = set()
        for port in self.sentinel_ports:
            try:
                with self._ask(port) as client:
                    named.add(int(client.sentinel_get_master_addr_by_name(MASTER_NAME)[1]))
            except (redis.RedisError, TypeError):
                return None
        return named.pop() if len(named) == 1 else None

    def _wait_ready(self, timeout: float = 15.0) -> None:
        """Every sentinel names the same master and knows the other sentinels and an
        in-sync replica, so that a failover can happen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.master_port() and all(self._ready(port) for port in self.sentinel_ports):
                return
            time.sleep(0.1)
        raise RuntimeError("the sentinel group did not become ready")

    def _ready(self, port: int) -> bool:
        try:
            with self._ask(port) as client:
                master = client.sentinel_master(MASTER_NAME)
                replicas = client.sentinel_slaves(MASTER_NAME)
        except redis.RedisError:
            return False
        return (int(master.get("num-other-sentinels", 0)) == SENTINELS - 1
                and "down" not in str(master.get("flags", ""))
                and any(r.get("master-link-status") == "ok"
                        and "down" not in str(r.get("flags", "")) for r in replicas))

    def failover(self, *, again: bool = True, timeout: float = 20.0) -> float:
        """The master killed with SIGKILL: returns once the sentinels have promoted the
        replica and, with ``again``, the old master, started again as its replica, is in sync
        (ready for the next failover). Seconds until the new master was named."""
        started = time.monotonic()
        old = self.master_port()
        server = self.master if self.master.port == old else self.replica
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        deadline = started + timeout
        while self.master_port() in (old, None):
            if time.monotonic() > deadline:
                raise AssertionError("no new master after the failover")
            time.sleep(0.05)
        took = time.monotonic() - started
        if not again:
            return took
        promoted = self.replica if server is self.master else self.master
        restarted = self._replica_of(promoted, server.data_dir, port=server.port)
        if server is self.master:
            self.master = restarted
        else:
            self.replica = restarted
        self._wait_ready(timeout)
        return took

    def stop(self) -> None:
        for process in self.sentinels:
            process.terminate()
        for process in self.sentinels:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.master.stop()
        self.replica.stop()
