"""Ownership: ids a client chooses live in its owner's namespace, so they never reveal or
touch another owner's messages, schedules or chains.

A message id, correlation id or causation id a client gives is scoped to the token subject
that gave it: ``<its id>.<owner tag>``, where the tag is a hash of the subject. Two owners can
use the same id; neither can learn that the other does, nor link to the other's messages by
naming them. Ids the service makes (generated message ids, deliveries) carry no tag. An owner
keeps using its own id: the API resolves an id in the caller's namespace first.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

#: Characters of the owner tag (base32 of a SHA-256 of the subject: 50 bits).
TAG_LENGTH = 10
#: The longest id a client may give (its scoped form adds ``.`` and the tag).
CLIENT_ID_MAX = 128


@lru_cache(maxsize=4096)
def owner_tag(owner: str) -> str:
    """A short stable tag of ``owner``: lower-case letters and digits 2-7."""
    digest = hashlib.sha256(owner.encode()).digest()
    return base64.b32encode(digest).decode().lower()[:TAG_LENGTH]


def scoped(owner: str, client_id: str) -> str:
    """The id ``client_id`` stands for when ``owner`` gives it."""
    return f"{client_id}.{owner_tag(owner)}"


def unscoped(owner: str, message_id: str) -> str | None:
    """The id ``owner`` gave for ``message_id``, if ``message_id`` is in its namespace."""
    suffix = "." + owner_tag(owner)
    return message_id[:-len(suffix)] if message_id.endswith(suffix) else None


def candidates(owner: str, given: str) -> tuple[str, ...]:
    """The ids ``given`` may name for ``owner``, in order: its own (scoped) id, then the id
    as it is (made by the service, or another owner's, which the caller must be allowed to
    read)."""
    return (scoped(owner, given), given)
