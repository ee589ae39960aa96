"""The names of the store's Redis keys, all under one prefix (``INTEGRATION_KEY_PREFIX``).

``msg:<id>`` (hash), ``hist:<id>`` (list), ``caused:<id>`` (set), ``idx:all`` /
``idx:type:<type>`` / ``idx:status:<status>`` / ``idx:owner:<owner>`` (sorted sets scored by
acceptance time), ``events`` (stream), ``outbox`` and ``due`` (sorted sets scored by due time),
``claim:<id>:<generation>`` (string). Scripts name some of them from their prefixes (an empty
id or value gives the prefix), so the store needs a single Redis, not Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """The key names under ``prefix``."""

    prefix: str

    def record(self, message_id: str) -> str:
        return f"{self.prefix}:msg:{message_id}"

    def history(self, message_id: str) -> str:
        # Its own namespace: ids may contain ':', so "msg:<id>:history" could be another id.
        return f"{self.prefix}:hist:{message_id}"

    def caused(self, message_id: str) -> str:
        """The messages ``message_id`` caused (the next steps of a chain)."""
        return f"{self.prefix}:caused:{message_id}"

    def index(self, kind: str, value: str = "") -> str:
        return f"{self.prefix}:idx:{kind}" + (f":{value}" if value else "")

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def outbox(self) -> str:
        """Messages whose result event still has deliveries to make."""
        return f"{self.prefix}:outbox"

    @property
    def due(self) -> str:
        """Messages parked outside the broker until their wait is over."""
        return f"{self.prefix}:due"

    def claim_prefix(self, message_id: str) -> str:
        """A message's claim keys without the generation (the begin script completes it)."""
        return f"{self.prefix}:claim:{message_id}:"

    def claim(self, message_id: str, generation: int) -> str:
        return f"{self.claim_prefix(message_id)}{generation}"
