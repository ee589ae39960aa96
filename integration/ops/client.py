"""Submit messages from another Python service without HTTP.

The client sends the same envelope to the same task (``integration.process``) on the same
queue as the gateway, and creates the same status record, so ``GET /api/v1/messages/<id>``
follows it too. The worker validates it again either way::

    from integration.ops.client import Client

    client = Client()                       # settings from INTEGRATION_* variables
    message_id = client.submit("alert", {"name": "DiskFull", "severity": "critical"},
                               source="monitoring/host-7")
    client.status(message_id)["status"]     # queued, processing, succeeded, ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from integration.app import build_submitter, get_settings
from integration.broker.submission import Accepted, Result
from integration.messages.problems import Problem
from integration.settings import Settings

#: The channel recorded for messages sent through this client.
CHANNEL = "direct"


class Client:
    def __init__(self, settings: Settings | None = None, *, owner: str = "direct") -> None:
        self.settings = settings or get_settings()
        self.owner = owner
        self._submitter = build_submitter(self.settings, origin="client")

    def submit(self, type: str, data: Mapping[str, Any], *, source: str,
               **attributes: Any) -> str:
        """Enqueue one message and return its id; raise the ``Problem`` that refused it."""
        envelope = {"type": type, "source": source, "data": dict(data), **attributes}
        [result] = self.submit_many([envelope])
        if isinstance(result, Problem):
            raise result
        return result.id

    def submit_many(self, envelopes: Sequence[Mapping[str, Any]]) -> list[Result]:
        """Enqueue a batch; one result per envelope, in order (``Accepted`` or a ``Problem``)."""
        return self._submitter.submit_raw([dict(e) for e in envelopes], owner=self.owner,
                                          channel=CHANNEL)

    def status(self, message_id: str) -> dict[str, Any] | None:
        """The status record of a message, as ``GET /api/v1/messages/<id>`` shows it."""
        return self._submitter.store.get(message_id)


__all__ = ["Accepted", "Client", "Problem"]
