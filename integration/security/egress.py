"""The one way this service makes outbound HTTP requests: checked, pinned, bounded, unredirected.

Every outbound call (the ``http`` action executor, webhook deliveries) goes through
``Egress.request``. Before connecting, ``EgressPolicy.check`` resolves the URL's host and
refuses internal addresses (loopback, private, link-local and cloud metadata, CGNAT,
multicast, reserved, and IPv6 forms that embed them) unless ``INTEGRATION_EGRESS_ALLOWLIST``
names them. The connection then goes to the address that was checked, while the Host header,
TLS SNI and certificate verification use the URL's host name, so a DNS answer that changes
between check and connect (DNS rebinding) cannot redirect the call. Redirects are never
followed; timeouts bound the connect and the whole exchange; the body read is bounded.

Errors, by the retry classes they belong to (``integration.retry``)::

    PermanentError
    ├── EgressRefused       the URL is not allowed (scheme, userinfo, address policy)
    ├── EgressTLSError      the certificate does not verify for the host name
    └── RejectedStatus      (also a DownstreamError) a 3xx or 4xx answer, from raise_for_status
    TransientError
    └── EgressUnavailable   DNS failure, connection refused or reset, protocol error
        └── EgressTimeout   connect or read took longer than allowed
    DownstreamError         a 5xx, 408 or 429 answer, from raise_for_status (retried; the
                            target's breaker counts it)
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from integration import logs
from integration.messages.retry import DownstreamError, PermanentError, TransientError
from integration.settings import ConfigurationError
from integration.version import __version__

if TYPE_CHECKING:
    from integration.settings import Settings

log = logs.get_logger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
_READ_CHUNK = 16 * 1024
_METHOD = re.compile(r"^[A-Z]{1,16}$")
# Set by the connection itself; a caller's value would let a request smuggle or mislead.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})

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
            raise EgressRefused(f"refused: {_shown(url)} is not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise EgressRefused(f"refused: scheme {scheme or '(none)'!r} is not http or https")
        if "@" in parts.netloc or "\\" in parts.netloc:
            raise EgressRefused("refused: URLs with userinfo (user:password@) are not allowed; "
                                "send credentials in a header")
        host = _normalise_host(parts.hostname or "")
        if not host:
            raise EgressRefused(f"refused: {_shown(url)} has no host")
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


def _shown(url: str) -> str:
    return repr(url[:200])


@dataclass(frozen=True)
class EgressResponse:
    """An answer as received: any status (3xx included: not followed), the body bounded."""

    status: int
    reason: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    truncated: bool  # the body was longer than the policy's limit; the rest was not read
    url: str  # ResolvedURL.display of what was called
    duration_ms: float

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self, limit: int | None = None) -> str:
        body = self.body if limit is None else self.body[:limit]
        return body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def raise_for_status(self, what: str | None = None, excerpt: str = "") -> None:
        """Raise unless 2xx: ``DownstreamError`` for 5xx, 408 and 429 (retried, counted by the
        target's breaker), ``RejectedStatus`` for the rest (permanent)."""
        if self.ok:
            return
        subject = what or self.url
        message = f"{subject} answered {self.status} {self.reason}".rstrip()
        if 300 <= self.status < 400:
            message += " (redirects are not followed)"
        if excerpt:
            message += f": {excerpt}"
        if self.status >= 500 or self.status in (408, 429):
            raise DownstreamError(self.status, message)
        raise RejectedStatus(self.status, message)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP to a checked address; ``host`` stays the URL's for the Host header."""

    def __init__(self, resolved: ResolvedURL, connect_timeout: float, timeout: float) -> None:
        super().__init__(resolved.host, resolved.port, timeout=timeout)
        self._addresses = resolved.addresses
        self._connect_timeout = connect_timeout

    def connect(self) -> None:
        self.sock = _open(self._addresses, self.port, self._connect_timeout, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to a checked address, with SNI and certificate checks for the URL's host name."""

    def __init__(self, resolved: ResolvedURL, connect_timeout: float, timeout: float,
                 context: ssl.SSLContext) -> None:
        super().__init__(resolved.host, resolved.port, timeout=timeout, context=context)
        self._addresses = resolved.addresses
        self._connect_timeout = connect_timeout
        self._tls = context

    def connect(self) -> None:
        sock = _open(self._addresses, self.port, self._connect_timeout, self.timeout)
        try:
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _open(addresses: tuple[str, ...], port: int, connect_timeout: float,
          timeout: float | None) -> socket.socket:
    """Connect to the first checked address that answers; never resolve the name again."""
    error: OSError | None = None
    for address in addresses:
        try:
            sock = socket.create_connection((address, port), timeout=connect_timeout)
        except OSError as exc:
            error = exc
            continue
        sock.settimeout(timeout)
        return sock
    assert error is not None  # addresses is never empty
    raise error


class Egress:
    """Outbound HTTP under one ``EgressPolicy``; safe to share between threads."""

    def __init__(self, policy: EgressPolicy | None = None,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.policy = policy or EgressPolicy()
        self._tls = tls_context or ssl.create_default_context()

    def request(self, method: str, url: str, *, json_body: Any = None,
                body: bytes | None = None, headers: Mapping[str, str] | None = None,
                timeout: float = 10.0) -> EgressResponse:
        """Send one request and return the answer, whatever its status.

        ``body`` is sent byte for byte (what a signature was computed over); ``json_body``
        is serialized compactly with ``Content-Type: application/json``. ``timeout`` bounds
        the whole exchange: connect (at most the policy's connect timeout), the request,
        the answer's headers and the bounded body.
        """
        method = method.upper()
        if not _METHOD.match(method):
            raise EgressRefused(f"refused: {method[:20]!r} is not an HTTP method")
        if json_body is not None and body is not None:
            raise ValueError("pass json_body or body, not both")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        outgoing = {"User-Agent": f"integration-bus/{__version__}", "Accept": "*/*"}
        for name, value in (headers or {}).items():
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the connection, not by callers")
            outgoing[name] = value
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            outgoing.setdefault("Content-Type", "application/json")

        resolved = self.policy.check(url)
        started = time.monotonic()
        deadline = started + timeout
        connect_timeout = min(self.policy.connect_timeout, timeout)
        connection = (_PinnedHTTPSConnection(resolved, connect_timeout, timeout, self._tls)
                      if resolved.scheme == "https"
                      else _PinnedHTTPConnection(resolved, connect_timeout, timeout))
        try:
            connection.request(method, resolved.path, body=body, headers=outgoing)
            _remaining(connection, deadline)
            response = connection.getresponse()
            content, truncated = self._read_bounded(connection, response, deadline)
        except ssl.SSLCertVerificationError as exc:
            raise EgressTLSError(f"{resolved.display}: TLS certificate not valid for "
                                 f"{resolved.host}: {exc.verify_message}") from None
        except TimeoutError:
            raise EgressTimeout(f"{resolved.display}: no answer within {timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise EgressUnavailable(f"{resolved.display}: {type(exc).__name__}: {exc}") from None
        finally:
            connection.close()
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        # Only the method, the URL without its query, the status and the size: never headers.
        log.info("egress request", method=method, url=resolved.display, status=response.status,
                 duration_ms=duration_ms, bytes=len(content), truncated=truncated)
        return EgressResponse(
            status=response.status, reason=response.reason or "",
            headers={k.lower(): v for k, v in response.getheaders()},
            body=content, truncated=truncated, url=resolved.display, duration_ms=duration_ms)

    def _read_bounded(self, connection: http.client.HTTPConnection,
                      response: http.client.HTTPResponse, deadline: float) -> tuple[bytes, bool]:
        """Read at most the policy's limit, within the deadline; what is left is never read."""
        limit = self.policy.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            _remaining(connection, deadline)
            chunk = response.read1(min(_READ_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        content = b"".join(chunks)
        return content[:limit], size > limit


def _remaining(connection: http.client.HTTPConnection, deadline: float) -> None:
    """Shorten the socket's timeout to what is left of the whole exchange's deadline."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    if connection.sock is not None:
        connection.sock.settimeout(left)


def egress_from_settings(settings: Settings) -> Egress:
    return Egress(EgressPolicy.from_settings(settings))

