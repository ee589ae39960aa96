"""Debian's HAProxy in front of gateways, as deploy/haproxy/haproxy.cfg runs it but at test
speed, and what its stats socket says about each server."""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path

import pytest

BINARY = "/usr/sbin/haproxy"


def haproxy_binary() -> str:
    found = BINARY if Path(BINARY).exists() else shutil.which("haproxy")
    if found is None:
        reason = "HAProxy is not installed (apt-get install haproxy)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the multi-host tests: {reason}")
        pytest.skip(reason)
    return found


def config(port: int, servers: Mapping[str, str], stats: Path) -> str:
    """A balancer on 127.0.0.1:``port`` for ``servers`` (name to ``host:port``), checking
    ``GET /readyz`` every 200 ms: two failures take a server out, two successes bring it back.
    A request whose connection fails is sent to the other server; one that reached a server
    is never sent twice (the client retries it, with its ``Idempotency-Key``)."""
    lines = [
        "global",
        f"    stats socket {stats} mode 600 level admin",
        "    maxconn 512",
        "defaults",
        "    mode http",
        "    timeout connect 300ms",
        "    timeout client 10s",
        "    timeout server 3s",
        "    timeout check 300ms",
        "    retries 2",
        "    option redispatch 1",
        "    retry-on conn-failure",
        "frontend api",
        f"    bind 127.0.0.1:{port}",
        "    default_backend gateways",
        "backend gateways",
        "    balance roundrobin",
        "    option httpchk",
        "    http-check send meth GET uri /readyz",
        "    http-check expect status 200",
        "    default-server inter 200ms fastinter 200ms downinter 200ms fall 2 rise 2",
        *(f"    server {name} {address} check" for name, address in servers.items()),
    ]
    return "\n".join(lines) + "\n"


def server_stats(stats: Path) -> dict[str, dict[str, str]]:
    """``show stat`` of the ``gateways`` backend's servers, by server name."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        sock.connect(str(stats))
        sock.sendall(b"show stat\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    text = b"".join(chunks).decode().lstrip("# ")
    return {row["svname"]: row for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "gateways" and row["svname"] not in ("FRONTEND", "BACKEND")}


def status(stats: Path, server: str) -> str:
    """``UP``, ``DOWN`` (or a transition such as ``UP 1/2``) for ``server``."""
    try:
        return server_stats(stats)[server]["status"]
    except OSError:
        return "unknown"


def sessions(stats: Path, server: str) -> int:
    """The connections HAProxy has sent to ``server`` so far."""
    return int(server_stats(stats)[server]["stot"] or 0)
