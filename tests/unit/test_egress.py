"""The egress address policy: which URLs an outbound call may reach (no request forgery)."""

from __future__ import annotations

import pytest

from integration.egress import EgressPolicy, EgressRefused, ResolvedURL
from integration.retry import classify
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
    ("http://localhost:8000/", "loopback"),  # a host name: its resolved address counts
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
    with pytest.raises(EgressRefused, match="link-local"):
        policy.check("http://rebound.internal/")


def test_a_name_with_any_internal_address_is_refused() -> None:
    """Every resolved address must pass, not just the first."""
    policy = EgressPolicy(resolver=lambda host, port: ["93.184.215.14", "10.0.0.1"])
    with pytest.raises(EgressRefused, match="10.0.0.1"):
        policy.check("http://mixed.example/")


@pytest.mark.parametrize("entry", ["not a host", "10.0.0.0/33", "http://x/"])
def test_a_bad_allowlist_entry_is_a_configuration_error(entry: str) -> None:
    """A typo in the allowlist stops the service instead of silently allowing nothing."""
    with pytest.raises(ConfigurationError, match="INTEGRATION_EGRESS_ALLOWLIST"):
        EgressPolicy.from_allowlist(entry)
