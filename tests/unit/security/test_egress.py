"""The egress address policy: which URLs an outbound call may reach (no request forgery)."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from integration.messages.retry import classify
from integration.security.egress_policy import (
    EgressPolicy,
    EgressRefused,
    EgressUnavailable,
    ResolvedURL,
)
from integration.settings import ConfigurationError


@pytest.mark.parametrize("url, reason", [
    ("http://127.0.0.1/", "loopback"),
    ("http://127.8.9.10:8080/x", "loopback"),
    ("http://10.1.2.3/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[::10.0.0.1]/", "private"),
    ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),
    ("http://[2002:7f00:1::]/", "loopback"),
    ("http://[fd12:3456::1]/", "private"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fec0::1]/", "site-local"),
    ("http://100.64.0.1/", "CGNAT"),
    ("http://224.0.0.251/", "multicast"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://240.0.0.1/", "reserved"),
    ("http://2130706433/", "loopback"),  # 127.0.0.1 as one decimal number
    ("http://0177.0.0.1/", "loopback"),  # and in octal
])
def test_internal_addresses_are_refused_by_default(url: str, reason: str) -> None:
    """Loopback, private, link-local (metadata), CGNAT and the like are refused, also
    spelled as IPv6 forms that carry them or as names that resolve to them."""
    with pytest.raises(EgressRefused, match=reason) as refused:
        EgressPolicy().check(url)
    assert classify(refused.value) == "permanent"


@pytest.mark.parametrize("url, what", [
    ("file:///etc/passwd", "scheme"),
    ("ftp://files.example.com/x", "scheme"),
    ("gopher://example.com/", "scheme"),
    ("//example.com/", "scheme"),
    ("http://user:pass@example.com/", "userinfo"),
    ("http://user@example.com/", "userinfo"),
    ("http://example.com\\@127.0.0.1/", "userinfo"),
    ("http://example.com:99999/", "not a valid URL"),
    ("http://exa mple.com/", "whitespace"),
    ("http:///path", "no host"),
])
def test_urls_that_are_not_plain_http_are_refused(url: str, what: str) -> None:
    """Only http and https without credentials in the URL, before any lookup."""
    with pytest.raises(EgressRefused, match=what):
        EgressPolicy().check(url)


def test_an_allowlisted_network_opens_exactly_that_range() -> None:
    """INTEGRATION_EGRESS_ALLOWLIST=127.0.0.1/32 allows 127.0.0.1 but not 127.0.0.2."""
    policy = EgressPolicy.from_allowlist("127.0.0.1/32, 10.20.0.0/16")
    resolved = policy.check("http://127.0.0.1:8080/restart?now=1")
    assert resolved == ResolvedURL("http", "127.0.0.1", 8080, "/restart?now=1", ("127.0.0.1",))
    assert resolved.display == "http://127.0.0.1:8080/restart"
    assert policy.check("https://10.20.3.4/").port == 443
    for url in ("http://127.0.0.2/", "http://10.21.0.1/", "http://169.254.169.254/"):
        with pytest.raises(EgressRefused):
            policy.check(url)


def test_an_allowlisted_host_name_opens_its_addresses_but_not_metadata() -> None:
    """A name in the allowlist may resolve to private addresses; link-local (cloud metadata)
    needs an explicit CIDR, since the name's DNS answer may change."""
    answers = {"ops.internal": ["10.0.0.7"], "rebound.internal": ["169.254.169.254"]}
    policy = EgressPolicy.from_allowlist("ops.internal,Rebound.Internal.",
                                         resolver=lambda host, port: answers[host])
    assert policy.check("https://OPS.internal./api").addresses == ("10.0.0.7",)
    with capture_logs() as logged, pytest.raises(EgressRefused):
        policy.check("http://rebound.internal/")
    assert logged[-1]["reason"].startswith("link-local")


def test_a_name_with_any_internal_address_is_refused() -> None:
    """Every resolved address must pass, not just the first."""
    policy = EgressPolicy(resolver=lambda host, port: ["93.184.215.14", "10.0.0.1"])
    with capture_logs() as logged, pytest.raises(EgressRefused) as refused:
        policy.check("http://mixed.example/")
    assert classify(refused.value) == "permanent"
    assert logged[-1]["address"] == "10.0.0.1"


@pytest.mark.parametrize("url", ["http://localhost:8000/", "http://metadata.internal/"])
def test_a_refused_name_never_says_what_it_resolves_to(url: str) -> None:
    """The refusal of a host name says it was refused, not the address nor its kind; the
    log line has both."""
    policy = EgressPolicy(resolver=lambda host, port: (
        ["127.0.0.1"] if host == "localhost" else ["169.254.169.254"]))
    with capture_logs() as logged, pytest.raises(EgressRefused) as refused:
        policy.check(url)
    message = str(refused.value)
    assert "resolves to an address that may not be called" in message
    for leaked in ("127.0.0.1", "169.254", "loopback", "link-local"):
        assert leaked not in message
    assert logged[-1]["event"] == "egress refused"
    assert logged[-1]["address"] in ("127.0.0.1", "169.254.169.254")


def test_a_name_that_cannot_be_resolved_keeps_the_resolver_error_in_the_log() -> None:
    """A resolver failure is transient and its answer names only the host."""
    def failing(host: str, port: int) -> list[str]:
        raise OSError("[Errno -2] Name or service not known (dns 10.0.0.53)")

    with capture_logs() as logged, pytest.raises(EgressUnavailable) as failed:
        EgressPolicy(resolver=failing).check("http://gone.example/")
    assert str(failed.value) == "cannot resolve gone.example"
    assert "10.0.0.53" in logged[-1]["error"]


@pytest.mark.parametrize("entry", ["not a host", "10.0.0.0/33", "http://x/"])
def test_a_bad_allowlist_entry_is_a_configuration_error(entry: str) -> None:
    """A typo in the allowlist stops the service instead of silently allowing nothing."""
    with pytest.raises(ConfigurationError, match="INTEGRATION_EGRESS_ALLOWLIST"):
        EgressPolicy.from_allowlist(entry)
