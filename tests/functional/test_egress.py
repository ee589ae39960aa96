"""Outbound HTTP against real local servers: pinning, redirects, timeouts, bounded bodies."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.messages.retry import DownstreamError, classify
from integration.security.egress import Egress
from integration.security.egress_policy import (
    EgressPolicy,
    EgressRefused,
    EgressTimeout,
    EgressTLSError,
    EgressUnavailable,
    RejectedStatus,
)
from tests.support.http_target import RecordingServer
from tests.support.tls import self_signed

LOCAL = EgressPolicy.from_allowlist("127.0.0.1/32")


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with RecordingServer() as running:
        yield running


def test_an_allowlisted_loopback_target_is_called_as_asked(server: RecordingServer) -> None:
    """Method, JSON body and headers arrive as sent; the answer comes back with its status."""
    response = Egress(LOCAL).request("PUT", server.url("/restart?now=1"),
                                     json_body={"service": "web"},
                                     headers={"X-Api-Key": "k-123"}, timeout=5)
    assert response.status == 200 and response.ok
    assert response.json()["path"] == "/restart"
    assert response.url == f"http://127.0.0.1:{server.port}/restart"
    [seen] = server.seen("/restart")
    assert seen.method == "PUT" and seen.json() == {"service": "web"}
    assert seen.headers["X-Api-Key"] == "k-123"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Host"] == f"127.0.0.1:{server.port}"


def test_a_loopback_target_is_refused_without_the_allowlist(server: RecordingServer) -> None:
    """The default policy refuses before connecting: the server sees nothing."""
    with pytest.raises(EgressRefused, match="loopback"):
        Egress().request("POST", server.url("/restart"), timeout=5)
    with pytest.raises(EgressRefused, match="may not be called"):
        Egress().request("POST", f"http://localhost:{server.port}/restart", timeout=5)
    assert server.requests == []


def test_the_connection_goes_to_the_checked_address_with_the_original_host(
    server: RecordingServer
) -> None:
    """The name is resolved once, by the policy check; the request then goes to that address
    (a changed DNS answer cannot move it) and still says ``Host: <name>``."""
    lookups: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        lookups.append(host)  # a second lookup would be the rebinding window: answer badly
        return ["127.0.0.1"] if len(lookups) == 1 else ["169.254.169.254"]

    policy = EgressPolicy.from_allowlist("127.0.0.1/32", resolver=rebinding)
    response = Egress(policy).request("GET", f"http://ops.test:{server.port}/pinned", timeout=5)
    assert response.status == 200
    assert lookups == ["ops.test"]
    [seen] = server.seen("/pinned")
    assert seen.headers["Host"] == f"ops.test:{server.port}"


def test_tls_verifies_the_original_host_name_on_the_pinned_address(tmp_path: Path) -> None:
    """SNI and the certificate check use the URL's name, not the address connected to; a
    certificate for another name is a permanent error."""
    server_tls, client_tls = self_signed(tmp_path, "ops.test")
    policy = EgressPolicy.from_allowlist("127.0.0.1/32",
                                         resolver=lambda host, port: ["127.0.0.1"])
    egress = Egress(policy, tls_context=client_tls)
    with RecordingServer(tls=server_tls) as server:
        response = egress.request("POST", f"https://ops.test:{server.port}/tls", json_body={},
                                  timeout=5)
        assert response.status == 200
        assert server.seen("/tls")[0].headers["Host"] == f"ops.test:{server.port}"
        with pytest.raises(EgressTLSError, match="other.test") as mismatch:
            egress.request("POST", f"https://other.test:{server.port}/tls", timeout=5)
    assert classify(mismatch.value) == "permanent"


def test_a_redirect_is_returned_not_followed(server: RecordingServer) -> None:
    """A 302 comes back as such; the Location is never requested, and callers treat it as
    a permanent failure."""
    response = Egress(LOCAL).request("POST", server.url("/redirect"), timeout=5)
    assert response.status == 302
    assert response.headers["location"] == server.url("/landed")
    assert server.seen("/landed") == []
    with pytest.raises(RejectedStatus, match="not followed") as rejected:
        response.raise_for_status()
    assert classify(rejected.value) == "permanent"


def test_a_slow_target_times_out_as_a_transient_error(server: RecordingServer) -> None:
    """A target that does not answer within the timeout fails in about that time, retryably."""
    server.slow_seconds = 3
    started = time.monotonic()
    with pytest.raises(EgressTimeout) as timed_out:
        Egress(LOCAL).request("GET", server.url("/slow"), timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert classify(timed_out.value) == "transient"


def test_a_large_body_is_read_only_up_to_the_limit(server: RecordingServer) -> None:
    """A 1 MiB answer yields the first 64 KiB, marked truncated."""
    response = Egress(LOCAL).request("GET", server.url("/big"), timeout=5)
    assert response.status == 200
    assert len(response.body) == 64 * 1024 and response.truncated


def test_answers_map_onto_the_retry_classes(server: RecordingServer) -> None:
    """5xx and 429 are retried (and counted by the breaker); other 4xx end dead."""
    egress = Egress(LOCAL)
    server.script("/status", 503, 429, 404)
    for expected in ("transient", "transient", "permanent"):
        with pytest.raises(DownstreamError) as failed:
            egress.request("POST", server.url("/status"), timeout=5).raise_for_status()
        assert classify(failed.value) == expected


def test_a_closed_port_is_a_transient_error() -> None:
    """Connection refused is worth retrying: the target may be restarting."""
    with RecordingServer() as server:
        url = server.url("/gone")
    with pytest.raises(EgressUnavailable) as refused:
        Egress(LOCAL).request("GET", url, timeout=2)
    assert classify(refused.value) == "transient"
