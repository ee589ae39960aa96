"""The link that signs a browser in to the operator console with a token."""

from __future__ import annotations

from urllib.parse import quote


def console_link(base_url: str, token: str) -> str:
    """``<base>/console#token=<token>``: the console moves the token into the tab's session
    storage and drops it from the address; a fragment is never sent to the server, so the
    token stays out of access logs and proxies."""
    return f"{base_url.rstrip('/')}/console#token={quote(token, safe='')}"
