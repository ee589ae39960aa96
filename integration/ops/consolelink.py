"""The link that signs a browser in to the operator console."""

from __future__ import annotations

from urllib.parse import quote

from integration.security.signin import SignInLinks


def console_link(base_url: str, token: str, links: SignInLinks | None = None) -> str:
    """With ``links``: ``<base>/console#code=<code>``, a single-use code the console trades
    for the token (``POST /console/sign-in``) within minutes. Without: the token itself after
    ``#token=``. Either way in the fragment, which no request carries, so neither reaches
    access logs or proxies; the console drops it from the address at once."""
    base = f"{base_url.rstrip('/')}/console"
    if links is not None:
        return f"{base}#code={links.create(token)}"
    return f"{base}#token={quote(token, safe='')}"
