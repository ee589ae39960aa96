"""The one way this service makes outbound HTTP requests: checked, pinned, bounded, unredirected.

Every outbound call (the ``http`` action executor, webhook deliveries) goes through
``Egress.request``. Before connecting, ``EgressPolicy.check`` resolves the URL's host and
refuses internal addresses (loopback, private, link-local and cloud metadata, CGNAT,
multicast, reserved, and IPv6 forms that embed them) unless ``INTEGRATION_EGRESS_ALLOWLIST``
names them. The connection then goes to the address that was checked, while the Host header,
TLS SNI and certificate verification use the URL's host name, so a DNS answer that changes
between check and connect (DNS rebinding) cannot redirect the call. Redirects are never
followed; timeouts bound the connect and the whole exchange; the body read is bounded.
With ``INTEGRATION_EGRESS_PROXY`` the checked request goes through that proxy instead
(``egress_proxy``): the same check first, the same bounds, nothing followed.

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
import json
import re
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from integration import logs
from integration.messages.retry import DownstreamError
from integration.security.egress_policy import (
    EgressPolicy,
    EgressRefused,
    EgressTimeout,
    EgressTLSError,
    EgressUnavailable,
    RejectedStatus,
    ResolvedURL,
)
from integration.security.egress_proxy import EgressProxy, through_proxy
from integration.version import __version__

if TYPE_CHECKING:
    from integration.settings import Settings

log = logs.get_logger(__name__)


_READ_CHUNK = 16 * 1024
_METHOD = re.compile(r"^[A-Z]{1,16}$")
# Set by the connection itself; a caller's value would let a request smuggle or mislead.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection",
                               "proxy-authorization"})


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
                 tls_context: ssl.SSLContext | None = None,
                 proxy: EgressProxy | None = None) -> None:
        self.policy = policy or EgressPolicy()
        self.proxy = proxy
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

        # Checked first, proxy or not: a refused target never reaches the proxy either.
        resolved = self.policy.check(url)
        started = time.monotonic()
        deadline = started + timeout
        connect_timeout = min(self.policy.connect_timeout, timeout)
        connection, target, extra = self._connection(resolved, connect_timeout, timeout)
        try:
            connection.request(method, target, body=body, headers={**outgoing, **extra})
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
                 duration_ms=duration_ms, bytes=len(content), truncated=truncated,
                 **({"proxy": self.proxy.display} if self.proxy else {}))
        return EgressResponse(
            status=response.status, reason=response.reason or "",
            headers={k.lower(): v for k, v in response.getheaders()},
            body=content, truncated=truncated, url=resolved.display, duration_ms=duration_ms)

    def _connection(self, resolved: ResolvedURL, connect_timeout: float, timeout: float
                    ) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
        """The connection for ``resolved``, the request target and any headers for a proxy:
        pinned to the checked address, or through the proxy."""
        if self.proxy is not None:
            return through_proxy(self.proxy, resolved, connect_timeout, timeout, self._tls)
        if resolved.scheme == "https":
            return (_PinnedHTTPSConnection(resolved, connect_timeout, timeout, self._tls),
                    resolved.path, {})
        return _PinnedHTTPConnection(resolved, connect_timeout, timeout), resolved.path, {}

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
    return Egress(EgressPolicy.from_settings(settings),
                  proxy=EgressProxy.from_settings(settings))

