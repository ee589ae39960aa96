"""A Redis Sentinel group on loopback for failover tests: two servers (a master and its
replica) and three sentinels, each a ``redis-server`` process of the test's own on a free
port, with detection and failover timeouts of about a second.

Everyone reaches each server through a TCP proxy of its own (``TcpProxy``), and the servers
announce the proxy's port, so a test can cut a server's link without stopping it: the
server still receives, and nothing it answers comes back (a link that drops packets)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from integration.ops.embedded_redis import EmbeddedRedis, free_port, redis_server_binary
from tests.support.tcp_proxy import TcpProxy

MASTER_NAME = "testmaster"
SENTINELS = 3
#: A replica's first sync starts at once (Redis waits 5 s for more replicas by default).
_PROMPT = ("--repl-diskless-sync-delay", "0")


@dataclass
class Node:
    """A server and the proxy in front of it; ``port`` (the proxy's) is its address."""

    server: EmbeddedRedis
    proxy: TcpProxy

    @property
    def port(self) -> int:
        return self.proxy.port


class SentinelGroup:
    """Two servers, one the master, and sentinels that watch them (quorum 2)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.nodes = [self._node(directory / "a", None), None]
        self.nodes[1] = self._node(directory / "b", self.nodes[0])
        self.sentinel_ports = [free_port() for _ in range(SENTINELS)]
        self.sentinels = [self._sentinel(port) for port in self.sentinel_ports]
        self._wait_ready()

    @staticmethod
    def _node(directory: Path, master: Node | None, proxy: TcpProxy | None = None,
              port: int | None = None) -> Node:
        """A server behind ``proxy`` (a new one unless given), replicating ``master``."""
        server = EmbeddedRedis(directory, port=port, persistent=False)
        proxy = proxy or TcpProxy("127.0.0.1", server.port)
        replicating = ("--replicaof", "127.0.0.1", str(master.port)) if master else ()
        server.extra_args = (*_PROMPT, "--replica-announce-port", str(proxy.port),
                             *replicating)
        return Node(server.start(), proxy)

    @property
    def addresses(self) -> str:
        """``INTEGRATION_REDIS_SENTINELS``."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def _sentinel(self, port: int) -> subprocess.Popen[bytes]:
        config = self.directory / f"sentinel-{port}.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self._node_at(None).port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 3000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n")
        return subprocess.Popen([redis_server_binary(), str(config), "--sentinel"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)

    def _node_at(self, port: int | None) -> Node:
        """The node with address ``port``; None: the first (the master at the start)."""
        nodes = [n for n in self.nodes if n is not None]
        return nodes[0] if port is None else next(n for n in nodes if n.port == port)

    def _ask(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5,
                           decode_responses=True)

    def master_port(self) -> int | None:
        """The master's address (its proxy's port), when every sentinel names the same."""
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

    def failover(self, *, cut: bool = False, timeout: float = 20.0) -> float:
        """The master killed with SIGKILL, or with ``cut`` its link cut (it keeps running,
        unreachable); returns once the sentinels have promoted the replica. A killed master
        is started again as the new master's replica, and the group is ready for another
        failover; a cut one stays cut. Seconds until the new master was named."""
        started = time.monotonic()
        old = self.master_port()
        node = self._node_at(old)
        if cut:
            node.proxy.accepting.set()
            node.proxy.silence()
        else:
            assert node.server.process is not None
            os.kill(node.server.process.pid, signal.SIGKILL)
            node.server.process.wait()
        deadline = started + timeout
        while self.master_port() in (old, None):
            if time.monotonic() > deadline:
                raise AssertionError("no new master after the failover")
            time.sleep(0.05)
        took = time.monotonic() - started
        if not cut:
            promoted = self._node_at(self.master_port())
            index = self.nodes.index(node)
            self.nodes[index] = self._node(node.server.data_dir, promoted, node.proxy,
                                           port=node.server.port)
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
        for node in self.nodes:
            if node is not None:
                node.proxy.close()
                node.server.stop()
