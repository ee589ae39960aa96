"""Signatures of webhook deliveries: Standard Webhooks, and the deprecated scheme before it.

Standard Webhooks (https://www.standardwebhooks.com/) signs ``"<id>.<timestamp>.<body>"``
with HMAC-SHA256 and sends three headers; any of its libraries verifies them::

    webhook-id: <the delivery's message id: the same for every retry of it>
    webhook-timestamp: <unix seconds of this attempt>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>

The key is what a ``whsec_<base64>`` secret's base64 stands for; any other secret (one made
before this scheme, or one its creator chose) is its own UTF-8 bytes, shown in the standard
form as ``whsec_`` and the base64 of them (``standard_secret``). Computed with ``hmac`` here:
the receivers' library is for receivers (and the tests), not a dependency of the service.

The deprecated header, sent too while ``INTEGRATION_WEBHOOK_LEGACY_SIGNATURE`` is on::

    X-Integration-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time

#: The prefix of a secret in the Standard Webhooks form (base64 after it).
SECRET_PREFIX = "whsec_"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
#: The deprecated signature header of earlier versions.
LEGACY_SIGNATURE_HEADER = "X-Integration-Signature"
#: A receiver should refuse signatures older than this (replays of a captured request).
SIGNATURE_TOLERANCE_SECONDS = 300
#: Key sizes the specification recommends for ``whsec_`` secrets.
KEY_BYTES = (24, 64)


def new_secret() -> str:
    """A fresh secret in the standard form: 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _decoded(secret: str) -> bytes | None:
    """The key a ``whsec_`` secret stands for, or None when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        return None


def secret_problem(secret: str) -> str | None:
    """Why a secret a creator chose cannot be used, or None: a ``whsec_`` secret must be
    base64 of a key of the recommended size; any other is used as its UTF-8 bytes."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    key = _decoded(secret)
    if key is None:
        return "a whsec_ secret must be whsec_ followed by base64"
    if not KEY_BYTES[0] <= len(key) <= KEY_BYTES[1]:
        return f"a whsec_ secret's key must be {KEY_BYTES[0]} to {KEY_BYTES[1]} bytes"
    return None


def signing_key(secret: str) -> bytes:
    """The HMAC key of a subscription's secret (see the module's docstring)."""
    key = _decoded(secret)
    return key if key else secret.encode()


def standard_secret(secret: str) -> str:
    """The secret in the ``whsec_`` form, the one Standard Webhooks libraries take."""
    if _decoded(secret):
        return secret
    return SECRET_PREFIX + base64.b64encode(secret.encode()).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value of ``body`` sent as ``message_id`` at ``timestamp``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def standard_headers(secret: str, message_id: str, timestamp: int,
                     body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one delivery attempt."""
    return {ID_HEADER: message_id, TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, message_id, timestamp, body)}


def sign_legacy(secret: str, timestamp: int, body: bytes) -> str:
    """The deprecated header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_legacy(secret: str, header: str, body: bytes, *, now: float | None = None,
                  tolerance: int = SIGNATURE_TOLERANCE_SECONDS) -> bool:
    """What a receiver of the deprecated header does: recompute the HMAC over the raw body and
    compare in constant time; refuse a timestamp outside the tolerance."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign_legacy(secret, timestamp, body),
                               f"t={timestamp},v1={parts['v1']}" if "v1" in parts else "")
