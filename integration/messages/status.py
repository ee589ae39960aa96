"""The status vocabulary of a message (see the README's lifecycle diagram)."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    ACCEPTED = "accepted"  # the gateway took it and is about to enqueue it
    QUEUED = "queued"  # in the broker
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"  # a transient error; back to queued when due
    DEFERRED = "deferred"  # a breaker is open or a target's rate limit is reached
    HELD = "held"  # loop detection stopped a repeated action
    DEAD = "dead"  # permanent error or attempts exhausted

    @property
    def final(self) -> bool:
        return self in (Status.SUCCEEDED, Status.DEAD)


#: Statuses from which a delivery may start processing. A redelivery of a message that is
#: already ``processing`` (worker killed, visibility timeout passed) may start it again.
STARTABLE = (Status.ACCEPTED, Status.QUEUED, Status.PROCESSING, Status.RETRYING, Status.DEFERRED)
