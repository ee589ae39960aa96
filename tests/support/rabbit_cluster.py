"""A three-node RabbitMQ cluster on hosts of ``tests/support/netns.py``, each node started
and joined by ``deploy/rabbitmq/cluster.sh`` (what docs/high-availability.md tells users to
run), and what ``rabbitmqctl`` says about the cluster and a quorum queue's members."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.conftest import ROOT, wait_for
from tests.support.netns import Hosts, wait_listening

SCRIPT = ROOT / "deploy" / "rabbitmq" / "cluster.sh"
AMQP_PORT = 5672
NODES = ("rq1", "rq2", "rq3")
VHOST = "integration"
#: Seconds until a silent peer counts as down (RabbitMQ's default is 60).
TICKTIME = 10


class RabbitCluster:
    """The nodes in hosts ``NODES`` of ``hosts``, their data under ``directory``."""

    def __init__(self, hosts: Hosts, directory: Path) -> None:
        self.hosts, self.directory = hosts, directory
        self.password = secrets.token_hex(12)
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "RABBITMQ_CLUSTER_COOKIE": secrets.token_hex(16),
                    "RABBITMQ_CLUSTER_PASSWORD": self.password,
                    "RABBITMQ_NET_TICKTIME": str(TICKTIME)}

    def node(self, name: str) -> str:
        return f"rabbit@{self.hosts.address(name)}"

    def url(self, names: Sequence[str] = NODES) -> str:
        """The broker URL naming ``names`` in order (kombu's failover syntax)."""
        return ";".join(f"amqp://integration:{self.password}@{self.hosts.address(name)}:"
                        f"{AMQP_PORT}/{VHOST}" for name in names)

    def start(self) -> RabbitCluster:
        """Boot the three nodes at once, then join the second and third to the first."""
        self.processes = {name: self._node(name) for name in NODES}
        joins = [self._script(name, "join", self.hosts.address(NODES[0]))
                 for name in NODES[1:]]
        for name, process in self.processes.items():
            wait_listening(self.hosts.address(name), AMQP_PORT, process,
                           f"rabbitmq in {name}", timeout=90)
        for join in joins:
            output, _ = join.communicate(timeout=120)
            assert join.returncode == 0, output
        wait_for(lambda: self.running("rq1") == set(NODES), timeout=30,
                 message="three running nodes")
        return self

    def _node(self, name: str) -> subprocess.Popen[bytes]:
        return self.hosts.run_in(name, [
            str(SCRIPT), "node", str(self.directory / name), self.hosts.address(name)],
            self.env, f"{name}-rabbitmq.log")

    def restart(self, name: str) -> None:
        """Kill the node in host ``name`` (SIGKILL, its whole process group) and start it
        again on its data: it boots as a member of the cluster."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self.processes[name] = self._node(name)
        wait_listening(self.hosts.address(name), AMQP_PORT, self.processes[name],
                       f"rabbitmq in {name}", timeout=90)

    def _script(self, name: str, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["ip", "netns", "exec", self.hosts[name].namespace, str(SCRIPT), argv[0],
             str(self.directory / name), self.hosts.address(name), *argv[1:]],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def ctl(self, name: str, *argv: str, timeout: float = 30) -> str:
        """``rabbitmqctl`` (or ``rabbitmq-queues`` with ``queues`` first) against the node in
        host ``name``; its output, or "" when it failed."""
        command = "queues" if argv[0] == "queues" else "ctl"
        process = self._script(name, command, *(argv[1:] if command == "queues" else argv))
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            return ""
        return output if process.returncode == 0 else ""

    def running(self, name: str) -> set[str]:
        """The hosts whose nodes the node in host ``name`` sees running."""
        listed = self.ctl(name, "eval", "rabbit_nodes:all_running().", timeout=20)
        return {host for host in NODES if f"'{self.node(host)}'" in listed}

    def leader(self, queue: str, asked: str = "rq1") -> str | None:
        """The host whose node leads quorum queue ``queue``."""
        listed = self.ctl(asked, "list_queues", "-q", "-p", VHOST, "name", "leader",
                          "--no-table-headers")
        for line in listed.splitlines():
            fields = line.split()
            if fields[:1] == [queue] and len(fields) > 1:
                return next((h for h in NODES if fields[1] == self.node(h)), None)
        return None

    def members(self, queue: str, asked: str) -> dict[str, str]:
        """Each member of quorum queue ``queue`` and its Raft state, as the node in host
        ``asked`` reports them (``rabbitmq-queues quorum_status``)."""
        listed = self.ctl(asked, "queues", "quorum_status", "-q", "-p", VHOST, queue)
        states: dict[str, str] = {}
        for line in listed.splitlines():  # a table: the node's name, then its Raft state
            words = re.findall(r"rabbit@[\w.-]+|\b(?:leader|follower|candidate)\b", line)
            host = next((h for h in NODES if words[:1] == [self.node(h)]), None)
            if host and len(words) > 1:
                states[host] = words[1]
        return states

    def members_healthy(self, queue: str, asked: str) -> bool:
        """Whether all three are members again: one leader, two followers."""
        states = self.members(queue, asked)
        return set(states) == set(NODES) and sorted(states.values()) == [
            "follower", "follower", "leader"]

    def heal(self, name: str, queue: str, timeout: float = 15) -> tuple[float, str]:
        """Bring host ``name``'s link back and wait until the cluster runs all three nodes and
        ``queue`` has all three members: seconds it took, and how. The returning node
        restarts its application; in about one heal of six that start hung, waiting for its
        peers, until the node was cut off again. A node not back within ``timeout`` (2-5 s
        is usual) is restarted (killed and started again on its data), as an operator
        would."""
        started = time.monotonic()
        asked = next(h for h in NODES if h != name)

        def rejoined() -> bool:
            return self.running(asked) == set(NODES) and self.members_healthy(queue, asked)

        self.hosts.heal(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if rejoined():
                return time.monotonic() - started, "rejoined"
            time.sleep(0.5)
        self.restart(name)
        wait_for(rejoined, timeout=60, interval=0.5,
                 message=f"{name} rejoined after a restart (log: "
                         f"{self.directory / name / 'log'})")
        return time.monotonic() - started, "rejoined once restarted"
