"""Outbound calls through an HTTP proxy (``INTEGRATION_EGRESS_PROXY``): an ``http`` target in an
absolute-form request to the proxy, an ``https`` target through a ``CONNECT host:port`` tunnel
and then TLS to the target itself (SNI and certificate checks for its name).

The egress policy has checked the target's own resolution before any of this; the proxy
resolves the name again, so with a proxy, pinning to the checked address is the proxy's job.
The proxy's credentials go only to the proxy (``Proxy-Authorization``; in the ``CONNECT`` for
``https``, never inside the tunnel) and never into a log, an error or ``repr``.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from integration.security.egress_policy import (
    EgressRefused,
    EgressTimeout,
    EgressUnavailable,
    ResolvedURL,
)
from integration.settings import ConfigurationError

if TYPE_CHECKING:
    from integration.settings import Settings

#: Answers to ``CONNECT`` that retrying cannot change: the proxy forbids the target, or the
#: credentials are missing or wrong.
_REFUSING = (403, 407)
_SETTING = "INTEGRATION_EGRESS_PROXY"


@dataclass(frozen=True)
class EgressProxy:
    """Where the proxy is, and the ``Proxy-Authorization`` value of its credentials."""

    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str) -> EgressProxy:
        """``http://[user:password@]host[:port]``; anything else is a ``ConfigurationError``
        that never repeats the value (it may hold a password)."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port or 80
        except ValueError:
            raise ConfigurationError(f"{_SETTING}: not a valid URL") from None
        if parts.scheme.lower() != "http":
            raise ConfigurationError(f"{_SETTING}: must be an http:// URL (the connection to "
                                     f"the proxy is plain HTTP; https targets are tunnelled)")
        if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigurationError(f"{_SETTING}: must be http://[user:password@]host:port, "
                                     f"without a path")
        authorization = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode()
        return cls(host=parts.hostname, port=port, authorization=authorization)

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressProxy | None:
        value = settings.egress_proxy.get_secret_value() if settings.egress_proxy else ""
        return cls.from_url(value) if value.strip() else None

    @property
    def display(self) -> str:
        """The proxy for logs and errors: without its credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _connect(proxy: EgressProxy, connect_timeout: float, timeout: float | None) -> socket.socket:
    """A connection to the proxy (the configured name, resolved as the system does)."""
    try:
        sock = socket.create_connection((proxy.host, proxy.port), timeout=connect_timeout)
    except TimeoutError:
        raise EgressTimeout(f"the egress proxy {proxy.display} did not accept a connection "
                            f"within {connect_timeout:g} s") from None
    except OSError as exc:
        raise EgressUnavailable(f"the egress proxy {proxy.display} cannot be reached: "
                                f"{type(exc).__name__}: {exc}") from None
    sock.settimeout(timeout)
    return sock


def _tunnel(sock: socket.socket, proxy: EgressProxy, host: str, port: int) -> None:
    """Ask the proxy for a tunnel to ``host:port``; raise unless it answers 200."""
    authority = _authority(host, port)
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
    # Nothing follows the proxy's answer before the TLS handshake starts, so the buffered
    # reader cannot swallow bytes of the tunnel.
    answer = http.client.HTTPResponse(sock, method="CONNECT")
    answer.begin()
    if answer.status == 200:
        return
    message = (f"the egress proxy {proxy.display} answered CONNECT {authority} with "
               f"{answer.status} {answer.reason}".rstrip())
    if answer.status in _REFUSING:
        raise EgressRefused(message)
    raise EgressUnavailable(message)


class ProxiedHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP to the proxy; requests name the target in absolute form."""

    def __init__(self, proxy: EgressProxy, connect_timeout: float, timeout: float) -> None:
        super().__init__(proxy.host, proxy.port, timeout=timeout)
        self._proxy = proxy
        self._connect_timeout = connect_timeout

    def connect(self) -> None:
        self.sock = _connect(self._proxy, self._connect_timeout, self.timeout)


class TunnelledHTTPSConnection(http.client.HTTPSConnection):
    """TLS to the target through a ``CONNECT`` tunnel, verified for the URL's host name."""

    def __init__(self, resolved: ResolvedURL, proxy: EgressProxy, connect_timeout: float,
                 timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(resolved.host, resolved.port, timeout=timeout, context=context)
        self._proxy = proxy
        self._connect_timeout = connect_timeout
        self._tls = context

    def connect(self) -> None:
        sock = _connect(self._proxy, self._connect_timeout, self.timeout)
        try:
            _tunnel(sock, self._proxy, self.host, self.port)
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def through_proxy(proxy: EgressProxy, resolved: ResolvedURL, connect_timeout: float,
                  timeout: float, tls: ssl.SSLContext
                  ) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """The connection for ``resolved`` through ``proxy``, the request target to send on it,
    and the headers the proxy needs on that request."""
    if resolved.scheme == "https":
        return (TunnelledHTTPSConnection(resolved, proxy, connect_timeout, timeout, tls),
                resolved.path, {})
    default = resolved.port == 80
    netloc = _authority(resolved.host, resolved.port) if not default else \
        (f"[{resolved.host}]" if ":" in resolved.host else resolved.host)
    headers = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else {}
    return (ProxiedHTTPConnection(proxy, connect_timeout, timeout),
            f"http://{netloc}{resolved.path}", headers)
