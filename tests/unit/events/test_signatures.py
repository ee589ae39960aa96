"""Webhook signatures: ours verify with the Standard Webhooks library, old secrets included."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook as Receiver
from standardwebhooks.webhooks import WebhookVerificationError

from integration.events import signatures
from integration.events.webhooks import WebhookRequest

BODY = b'{"specversion":"1.0","id":"e-1","type":"alert.succeeded","data":{"x":"\xc3\xa9"}}'


@pytest.mark.parametrize("secret", [
    signatures.new_secret(),
    "an-old-secret-of-16+-characters",  # made before Standard Webhooks: its UTF-8 bytes
    "dyNMeB9kLA3xZwWKEQDtP0JwpjH2Rw2L6wCx_Z1uDkE",  # token_urlsafe(32), the old default
])
def test_our_signature_verifies_with_the_library(secret: str) -> None:
    """The library's ``Webhook.verify`` accepts our headers, given the whsec_ form of the
    secret (or, for an old secret, its bytes)."""
    now = int(time.time())
    headers = signatures.standard_headers(secret, "delivery-1", now, BODY)
    assert headers["webhook-id"] == "delivery-1" and headers["webhook-timestamp"] == str(now)
    assert headers["webhook-signature"].startswith("v1,")
    standard = signatures.standard_secret(secret)
    assert standard.startswith("whsec_")
    assert Receiver(standard).verify(BODY, headers)["id"] == "e-1"
    assert Receiver(signatures.signing_key(secret)).verify(BODY, headers)["id"] == "e-1"


def test_the_library_refuses_a_changed_body_id_key_or_old_timestamp() -> None:
    """The signature covers the id, the timestamp and the body, under the secret's key."""
    secret = signatures.new_secret()
    now = int(time.time())
    headers = signatures.standard_headers(secret, "delivery-1", now, BODY)
    receiver = Receiver(secret)
    for body, changed in ((BODY + b" ", headers),
                          (BODY, {**headers, "webhook-id": "delivery-2"}),
                          (BODY, {**headers, "webhook-timestamp": str(now + 1)})):
        with pytest.raises(WebhookVerificationError):
            receiver.verify(body, changed)
    with pytest.raises(WebhookVerificationError):
        Receiver(signatures.new_secret()).verify(BODY, headers)
    old = signatures.standard_headers(secret, "delivery-1", now - 600, BODY)
    with pytest.raises(WebhookVerificationError, match="too old"):
        receiver.verify(BODY, old)


def test_a_whsec_secret_is_its_decoded_key_and_others_their_bytes() -> None:
    """The mapping that keeps existing receivers working: an old secret keys the HMAC with its
    own bytes, shown as whsec_ and their base64; a whsec_ secret stands for what it decodes to."""
    assert signatures.signing_key("an-old-secret-of-16+-characters") == \
        b"an-old-secret-of-16+-characters"
    assert signatures.standard_secret("an-old-secret-of-16+-characters") == \
        "whsec_YW4tb2xkLXNlY3JldC1vZi0xNistY2hhcmFjdGVycw=="
    fresh = signatures.new_secret()
    assert signatures.standard_secret(fresh) == fresh
    assert len(signatures.signing_key(fresh)) == 32


def test_a_chosen_whsec_secret_must_be_base64_of_a_sized_key() -> None:
    """A creator's whsec_ secret is refused unless it is base64 of 24 to 64 bytes."""
    for bad in ("whsec_not base64!!", "whsec_" + "QUJD" * 4):  # 12 bytes
        with pytest.raises(ValueError, match="whsec_"):
            WebhookRequest(url="https://example.com/h", topics=["a.*"], secret=bad)
    good = signatures.new_secret()
    assert WebhookRequest(url="https://example.com/h", topics=["a.*"], secret=good).secret == good


def test_the_deprecated_header_still_verifies_as_before() -> None:
    """The old scheme is unchanged: its receivers keep working during the deprecation."""
    secret = "an-old-secret-of-16+-characters"
    header = signatures.sign_legacy(secret, int(time.time()), BODY)
    assert signatures.verify_legacy(secret, header, BODY)
    assert not signatures.verify_legacy(secret, header, BODY + b" ")
    assert not signatures.verify_legacy("another-secret-of-16+", header, BODY)
