"""Hosts on one machine: a network namespace per host, each joined by a veth pair to a bridge
of the run's own on a private subnet, so processes bound to different addresses talk over
links a test can cut (as root; docs/high-availability.md, Testing it on one machine).

Every packet stays on the machine: the subnets come from ``SUPERNET``, which the root
namespace routes as ``unreachable`` (only a run's own bridge, which holds an address in it,
is more specific), and no namespace has a default route. Names start with ``PREFIX`` and a
run id, so parallel runs and leftovers of killed runs never collide; ``clean_stale`` removes
the leftovers whose run has ended.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from integration.sources import process_alive
from tests.conftest import ROOT, wait_for

#: The start of every namespace, veth and bridge name these tests make (then a run id).
PREFIX = "ihn"
#: The private network the runs' subnets come from; nothing else on this machine uses it.
SUPERNET = ipaddress.ip_network("10.213.0.0/16")
#: One file per live run, named by its id, holding the pid of the process that owns it.
OWNERS = Path("/run/integration-hosts")
#: The nft table of a host's partition rules.
PARTITION = "partition"


class HostsUnavailable(RuntimeError):
    """Network namespaces cannot be made here."""


def _ip(*argv: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise HostsUnavailable(f"ip {' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def unavailable() -> str | None:
    """Why hosts cannot be made here (not root, no ``ip netns``), or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"{PREFIX}probe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except HostsUnavailable as exc:
        return f"ip netns does not work here: {exc}"
    return None


def require_hosts() -> None:
    """Skip with the reason when hosts cannot be made; with ``CI=true`` fail instead."""
    reason = unavailable()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the multi-host tests: {reason}")
    pytest.skip(reason)


def _run_of(name: str) -> str | None:
    """The run id in a name this module made, or None for any other name."""
    rest = name[len(PREFIX):]
    return rest[:4] if name.startswith(PREFIX) and len(rest) >= 4 else None


def _namespaces() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def _links() -> list[str]:
    return [line.split(":")[1].strip().split("@")[0]
            for line in _ip("-o", "link", "show").splitlines()]


def _kill_namespace_processes(namespace: str) -> None:
    for pid in _ip("netns", "pids", namespace, check=False).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def _remove(namespaces: Sequence[str], links: Sequence[str]) -> None:
    """Kill what runs in ``namespaces``, delete ``links`` (a veth takes its peer along) and
    the namespaces, and fail unless they are gone."""
    for namespace in namespaces:
        _kill_namespace_processes(namespace)
    for link in links:
        _ip("link", "del", link, check=False)
    for namespace in namespaces:
        # A namespace a killed process still held can take a moment to let go.
        for _ in range(50):
            _ip("netns", "del", namespace, check=False)
            if not Path("/run/netns", namespace).exists():
                break
            time.sleep(0.1)
    left = ({n for n in namespaces} & set(_namespaces())) | ({n for n in links} & set(_links()))
    if left:
        raise AssertionError(f"still there after teardown: {sorted(left)}")


def clean_stale() -> list[str]:
    """Remove the namespaces and links of runs whose owner has exited; their names."""
    def stale(name: str) -> bool:
        run = _run_of(name)
        if run is None or run == "prob":
            return False
        owner = OWNERS / run
        try:
            return not process_alive(int(owner.read_text()))
        except (OSError, ValueError):
            return True

    namespaces = [n for n in _namespaces() if stale(n)]
    links = [n for n in _links() if stale(n)]
    _remove(namespaces, links)
    for name in {*namespaces, *links}:
        run = _run_of(name)
        if run:
            (OWNERS / run).unlink(missing_ok=True)
    return [*namespaces, *links]


def ensure_unreachable_route() -> None:
    """Route ``SUPERNET`` nowhere in the root namespace, so an address of it that no bridge
    holds never follows the default route off the machine; fail unless the route is there.
    It stays after the run: other runs may rely on it, and it sends nothing anywhere."""
    if not _ip("route", "show", "type", "unreachable", str(SUPERNET)).strip():
        _ip("route", "add", "unreachable", str(SUPERNET))
    if not _ip("route", "show", "type", "unreachable", str(SUPERNET)).strip():
        raise HostsUnavailable(f"no unreachable route for {SUPERNET}")


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of ``SUPERNET`` that no interface here has an address in."""
    used: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
    for line in _ip("-o", "-4", "addr", "show").splitlines():
        network = ipaddress.ip_interface(line.split()[3]).network
        if network.overlaps(SUPERNET):
            used.update(network.subnets(new_prefix=24) if network.prefixlen <= 24
                        else [network.supernet(new_prefix=24)])
    candidates = [n for n in SUPERNET.subnets(new_prefix=24)
                  if n not in used and n.network_address.packed[2] != 0]
    return candidates[secrets.randbelow(len(candidates))]  # type: ignore[return-value]


@dataclass(frozen=True)
class Host:
    """One host: its namespace, the root side of its veth pair, and its address."""

    name: str
    namespace: str
    link: str
    address: str


class Hosts:
    """Namespaces ``names`` on a bridge of their own, with the processes started in them.

    ``start()`` builds them, ``close()`` kills every process started in a namespace, deletes
    the veths, the bridge and the namespaces and checks they are gone. ``cut``/``heal`` take
    a host's link down and up; they run on the main thread, since a process started from a
    thread that entered a namespace would inherit it.
    """

    def __init__(self, names: Sequence[str], log_dir: Path) -> None:
        if any(len(name) > 6 for name in names):
            raise ValueError("host names of at most 6 characters (interface names are short)")
        self.run = secrets.token_hex(2)
        self.prefix = PREFIX + self.run
        self.log_dir = log_dir
        self.bridge = f"{self.prefix}br"
        self.subnet = _free_subnet()
        addresses = list(self.subnet.hosts())
        #: The root namespace's address on the bridge (where hosts reach the test's servers).
        self.gateway_address = str(addresses[0])
        self.hosts = {name: Host(name, f"{self.prefix}-{name}", f"{self.prefix}{name}",
                                 str(addresses[10 + index]))
                      for index, name in enumerate(names)}
        self.processes: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
        self._owner = OWNERS / self.run

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def address(self, name: str) -> str:
        return self.hosts[name].address

    def start(self) -> Hosts:
        OWNERS.mkdir(parents=True, exist_ok=True)
        self._owner.write_text(str(os.getpid()))
        try:
            ensure_unreachable_route()
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway_address}/{self.subnet.prefixlen}",
                "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for host in self.hosts.values():
                _ip("netns", "add", host.namespace)
                _ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0",
                    "netns", host.namespace)
                _ip("link", "set", host.link, "master", self.bridge, "up")
                _ip("-n", host.namespace, "addr", "add",
                    f"{host.address}/{self.subnet.prefixlen}", "dev", "eth0")
                _ip("-n", host.namespace, "link", "set", "eth0", "up")
                _ip("-n", host.namespace, "link", "set", "lo", "up")
            self._check_routes()
        except BaseException:
            self.close()
            raise
        return self

    def _check_routes(self) -> None:
        """The hosts are reached through the bridge, and the rest of ``SUPERNET`` nowhere."""
        for host in self.hosts.values():
            route = _ip("route", "get", host.address)
            if f"dev {self.bridge}" not in route:
                raise HostsUnavailable(f"{host.address} is not routed to {self.bridge}: {route}")
        outside = str(next(n for n in SUPERNET.subnets(new_prefix=24) if n != self.subnet)
                      .network_address + 1)
        result = subprocess.run(["ip", "route", "get", outside], capture_output=True, text=True,
                                timeout=20)
        if result.returncode == 0 and " via " in result.stdout:
            raise HostsUnavailable(f"{outside} would leave the machine: {result.stdout}")

    def run_in(self, name: str, argv: Sequence[str], env: dict[str, str],
               log: str | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` in host ``name``'s namespace (``ip netns exec`` execs it, so the pid
        is the program's), its output in ``log`` under the log directory."""
        return self.run_here(["ip", "netns", "exec", self.hosts[name].namespace, *argv], env,
                             log or f"{name}-{Path(argv[0]).name}.log")

    def run_here(self, argv: Sequence[str], env: dict[str, str],
                 log: str) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the root namespace, stopped with the hosts."""
        output = (self.log_dir / log).open("ab")
        process = subprocess.Popen(list(argv), cwd=ROOT, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append((process, output))
        return process

    def log(self, name: str) -> str:
        return (self.log_dir / name).read_text(errors="replace")

    def cut(self, name: str) -> None:
        """Take host ``name``'s link down: nothing reaches it, it reaches nothing."""
        self._set(name, "down")

    def heal(self, name: str) -> None:
        """Bring host ``name``'s link back up."""
        self._set(name, "up")

    def partition(self, name: str, others: Sequence[str]) -> None:
        """Drop every packet between host ``name`` and hosts ``others`` (nft rules in
        ``name``'s namespace), while the rest still reach it: a partition, not a dead host."""
        self._main_thread()
        rules = [f"table inet {PARTITION} {{",
                 "  chain input { type filter hook input priority 0; policy accept; }",
                 "  chain output { type filter hook output priority 0; policy accept; }",
                 "}"]
        for other in others:
            address = self.hosts[other].address
            rules += [f"add rule inet {PARTITION} input ip saddr {address} drop",
                      f"add rule inet {PARTITION} output ip daddr {address} drop"]
        self._nft(name, "\n".join(rules) + "\n")

    def mend(self, name: str) -> None:
        """Remove the partition rules of host ``name``."""
        self._main_thread()
        # "add" first: deleting a table that is not there is an error (nft has no "destroy"
        # before 1.0.8).
        self._nft(name, f"add table inet {PARTITION}\ndelete table inet {PARTITION}\n")

    def _nft(self, name: str, script: str) -> None:
        result = subprocess.run(["ip", "netns", "exec", self.hosts[name].namespace, "nft", "-f",
                                 "-"], input=script, capture_output=True, text=True, timeout=20)
        if result.returncode != 0:
            raise HostsUnavailable(f"nft in {name}: {result.stderr.strip()}")

    def _set(self, name: str, state: str) -> None:
        self._main_thread()
        _ip("link", "set", self.hosts[name].link, state)

    @staticmethod
    def _main_thread() -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("links are cut and healed from the main thread")

    def close(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 5
        for process, output in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            output.close()
        self.processes.clear()
        namespaces = [h.namespace for h in self.hosts.values()]
        links = [h.link for h in self.hosts.values()] + [self.bridge]
        try:
            _remove([n for n in namespaces if n in _namespaces()],
                    [n for n in links if n in _links()])
        finally:
            self._owner.unlink(missing_ok=True)

    def __enter__(self) -> Hosts:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()


def reachable(address: str, port: int, timeout: float = 0.3) -> bool:
    """Whether something accepts a TCP connection at ``address:port``."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_listening(address: str, port: int, process: subprocess.Popen[bytes], what: str,
                   timeout: float = 30) -> None:
    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}")
        return reachable(address, port)

    wait_for(up, timeout=timeout, message=f"{what} listening on {address}:{port}")
