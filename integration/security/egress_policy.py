"""What outbound calls may reach, and what can go wrong: a URL's host resolved and each address
checked against the internal ranges (loopback, private, link-local and cloud metadata, CGNAT,
multicast, reserved, and IPv6 forms that embed them) unless the allowlist names it."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from integration import logs
from integration.messages.retry import DownstreamError, PermanentError, TransientError
from integration.settings import ConfigurationError

if TYPE_CHECKING:
    from integration.settings import Settings

log = logs.get_logger(__name__)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024


_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # CGNAT, RFC 6598


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the last 32 bits are an IPv4 address


# Reachable only through an explicit CIDR, never through an allowed host name: a name's DNS
# answer may change, and these are the addresses request forgery aims at (cloud metadata).
_NEVER_BY_NAME = ("link-local", "multicast", "unspecified")


class EgressRefused(PermanentError):
    """The URL may not be called: wrong scheme, userinfo, or an address the policy refuses."""


class EgressTLSError(PermanentError):
    """The server's certificate does not verify for the URL's host name."""


class EgressUnavailable(TransientError):
    """The target could not be reached or answered garbage; it may recover."""


class EgressTimeout(EgressUnavailable):
    """Connecting or reading took longer than allowed."""


class RejectedStatus(DownstreamError, PermanentError):
    """A 3xx (redirects are not followed) or a 4xx other than 408 and 429: retrying cannot help."""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries, which is where a packet to it really goes."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(address.packed[-4:])
    # IPv4-compatible (::a.b.c.d, deprecated); :: and ::1 are themselves, not IPv4.
    if address.packed[:12] == bytes(12) and int(address) > 1:
        return ipaddress.IPv4Address(address.packed[-4:])
    return None


def forbidden_reason(address: IPAddress) -> str | None:
    """Why the default policy refuses ``address``, or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = forbidden_reason(embedded)
            return f"{reason} (IPv4 {embedded} inside IPv6)" if reason else None
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"  # 169.254.169.254 and fe80::/10: cloud metadata lives here
    if address.is_multicast:
        return "multicast"
    if address in _SHARED_ADDRESS_SPACE:
        return "shared address space (CGNAT)"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"  # RFC 1918, fc00::/7, and the other special-purpose blocks
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"  # fec0::/10: deprecated, but still internal where it is routed
    if not address.is_global:
        return "not globally routable"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for ``host`` (a literal address is itself)."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


@dataclass(frozen=True)
class ResolvedURL:
    """A URL that passed the policy, with the addresses it may be connected to."""

    scheme: str
    host: str  # as in the URL (IDNA-encoded, no brackets): Host header, SNI, certificate
    port: int
    path: str  # path and query, as sent in the request line
    addresses: tuple[str, ...]

    @property
    def display(self) -> str:
        """The URL for logs and results: without the query, which may carry credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path.split('?', 1)[0]}"


@dataclass(frozen=True)
class EgressPolicy:
    """What outbound calls may reach, and how long and how much they may take.

    By default only globally routable addresses; ``allowed_networks`` opens address ranges,
    ``allowed_hosts`` opens the (loopback, private, CGNAT, reserved) addresses of those
    host names.
    """

    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()
    connect_timeout: float = 3.0
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    #: Host name and port to addresses; the system resolver unless a deployment (or a test
    #: of pinning) brings its own. Called once per request: its answer is what is connected.
    resolver: Callable[[str, int], Sequence[str]] = field(default=system_resolver,
                                                         compare=False)

    @classmethod
    def from_allowlist(cls, entries: str | Iterable[str], **options: Any) -> EgressPolicy:
        """A policy from allowlist entries (CIDRs, addresses, host names; a string is split on
        commas); an entry that is none of these is a ``ConfigurationError``."""
        if isinstance(entries, str):
            entries = entries.split(",")
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = _normalise_host(entry)
            if name is None or not re.fullmatch(r"[a-z0-9.-]+", name) or "/" in entry:
                raise ConfigurationError(
                    f"INTEGRATION_EGRESS_ALLOWLIST: {entry!r} is neither a CIDR nor a host name")
            hosts.add(name)
        return cls(allowed_networks=tuple(networks), allowed_hosts=frozenset(hosts), **options)

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressPolicy:
        return cls.from_allowlist(settings.egress_allowlist,
                                  connect_timeout=settings.egress_connect_timeout_seconds,
                                  max_response_bytes=settings.egress_max_response_bytes)

    def refusal(self, address: IPAddress, host: str | None = None) -> str | None:
        """Why ``address`` (resolved from ``host``) may not be called, or None if it may."""
        if any(address.version == net.version and address in net
               for net in self.allowed_networks):
            return None
        reason = forbidden_reason(address)
        if reason is None:
            return None
        if host is not None and host in self.allowed_hosts and \
                not reason.startswith(_NEVER_BY_NAME):
            return None
        return reason

    def check(self, url: str) -> ResolvedURL:
        """Parse and resolve ``url``; raise ``EgressRefused`` unless every address is allowed.

        Every address the name resolves to must pass, not just one: a name that also points
        inside the network is refused whichever address a connection would pick.
        """
        if not isinstance(url, str) or any(c.isspace() or ord(c) < 32 for c in url):
            raise EgressRefused("refused: the URL contains whitespace or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise EgressRefused(f"refused: {shown_url(url)} is not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise EgressRefused(f"refused: scheme {scheme or '(none)'!r} is not http or https")
        if "@" in parts.netloc or "\\" in parts.netloc:
            raise EgressRefused("refused: URLs with userinfo (user:password@) are not allowed; "
                                "send credentials in a header")
        host = _normalise_host(parts.hostname or "")
        if not host:
            raise EgressRefused(f"refused: {shown_url(url)} has no host")
        port = port or (443 if scheme == "https" else 80)
        addresses = self._resolve(host, port)
        if not addresses:
            raise EgressUnavailable(f"cannot resolve {host}: no addresses")
        for text in addresses:
            reason = self.refusal(ipaddress.ip_address(text.split("%", 1)[0]), host)
            if reason is None:
                continue
            allowlist = ("outbound calls reach only public addresses unless "
                         "INTEGRATION_EGRESS_ALLOWLIST names the address or the host")
            if _literal_address(host):  # the caller wrote the address: nothing to hide
                shown = text if host == text else f"{host} ({text})"
                raise EgressRefused(f"refused: {shown} ({reason}); {allowlist}")
            # What a name resolves to is this network's business: the log has it, the
            # answer (a subscription's 422, a message's error) only says it was refused.
            log.warning("egress refused", host=host, address=text, reason=reason)
            raise EgressRefused(f"refused: {host} resolves to an address that may not be "
                                f"called (the service's log names it); {allowlist}")
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        return ResolvedURL(scheme=scheme, host=host, port=port, path=path,
                           addresses=addresses)

    def _resolve(self, host: str, port: int) -> tuple[str, ...]:
        try:
            return tuple(dict.fromkeys(self.resolver(host, port)))
        except (OSError, UnicodeError) as exc:
            # The resolver's own words stay in the log (they may name internal servers).
            log.warning("egress cannot resolve", host=host, error=str(exc))
            raise EgressUnavailable(f"cannot resolve {host}") from None


def _literal_address(host: str) -> bool:
    """An address written in the URL, in any form the resolver reads as one (``127.0.0.1``,
    ``2130706433``, ``0177.0.0.1``, ``::1``), rather than a name to look up."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def _normalise_host(host: str) -> str | None:
    """Lower case, no trailing dot, IDNA-encoded: one spelling per name for allowlist matches."""
    host = host.strip().strip("[]").rstrip(".").lower()
    try:
        return host.encode("idna").decode("ascii") if host else None
    except UnicodeError:
        return None


def shown_url(url: str) -> str:
    return repr(url[:200])
