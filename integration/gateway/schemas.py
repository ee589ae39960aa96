"""Request and response models of the HTTP API, the source of its OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    StrictInt,
    model_validator,
)

from integration.messages.envelope import Envelope
from integration.messages.status import Status


class ProblemDocument(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        None, description="For 422: each error's location (loc), message (msg) and type."
    )


#: The problems a submitting route may answer (``POST /messages``, ``/alertmanager``).
SUBMIT_PROBLEMS = {f"HTTP_{code}": ProblemDocument
                   for code in (400, 401, 403, 413, 415, 422, 429, 503)}


class SubmitRequest(RootModel[Envelope | list[Envelope]]):
    """One message envelope, or a JSON array of them (a batch)."""


class AcceptedMessage(BaseModel):
    id: str
    type: str
    status: Status
    status_url: str


class BatchItem(BaseModel):
    index: int
    status: int = Field(description="202 when accepted, otherwise the problem's status")
    id: str | None = None
    status_url: str | None = None
    problem: ProblemDocument | None = None


class BatchResponse(BaseModel):
    accepted: int
    rejected: int
    results: list[BatchItem]


class SubmitResponse(RootModel[AcceptedMessage | BatchResponse]):
    """One message's answer, or a batch's (one result per item)."""


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str | None = Field(None, max_length=128)
    status: Status | None = None
    limit: int = Field(50, ge=1, le=1000)
    cursor: str | None = Field(None, max_length=300, pattern=r"^\d+:[A-Za-z0-9._:-]*$")


class MessageSummary(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    type: str
    status: Status
    attempts: int
    accepted_at: str
    source: str | None = Field(None, description="the sender's source (in listings)")


class MessageDetail(MessageSummary):
    envelope: dict[str, Any]
    history: list[dict[str, Any]]
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class MessagePage(BaseModel):
    items: list[MessageSummary]
    next_cursor: str | None


class TypeInfo(BaseModel):
    name: str
    queue: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema")


class TypeList(BaseModel):
    task: str = Field(description="The Celery task name direct callers send to")
    types: list[TypeInfo]


def _iso_only(value: object) -> object:
    """RFC 3339 date-times only: pydantic would also read "1718" as a Unix timestamp."""
    if isinstance(value, str | int | float) and str(value).lstrip("-").replace(".", "").isdigit():
        raise ValueError("expected an RFC 3339 date-time such as 2026-01-31T12:00:00Z")
    return value


Moment = Annotated[AwareDatetime, BeforeValidator(_iso_only)]


class DeadLetterQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str | None = Field(None, max_length=128)
    since: Moment | None = Field(None, description="accepted at or after")
    until: Moment | None = Field(None, description="accepted at or before")
    limit: int = Field(50, ge=1, le=1000)
    cursor: str | None = Field(None, max_length=300, pattern=r"^\d+:[A-Za-z0-9._:-]*$")


class ReplayRequest(BaseModel):
    """Which dead letters to replay: a filter, or ``"all": true`` (never by default)."""

    model_config = ConfigDict(extra="forbid")

    type: str | None = Field(None, max_length=128)
    since: Moment | None = None
    until: Moment | None = None
    # Strict: a JSON body says true or 100, never "yes" or true for a number.
    all: StrictBool = Field(False, description="replay every dead letter (the caller may "
                                               "manage); only without type, since and until")
    limit: StrictInt = Field(100, ge=1, le=10_000)

    @model_validator(mode="after")
    def _explicit(self) -> ReplayRequest:
        # An empty body replaying everything was one mistyped request away from a storm.
        filtered = any(v is not None for v in (self.type, self.since, self.until))
        if not filtered and not self.all:
            raise ValueError('give a filter (type, since, until) or "all": true')
        if filtered and self.all:
            raise ValueError('"all": true replays every dead letter; leave out the filters '
                             "or all")
        return self


class SubjectRevocation(BaseModel):
    """Revoke every token of a subject issued at or before a moment (now by default)."""

    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=256)
    before: Moment | None = Field(None, description="tokens issued at or before this moment "
                                                    "(not in the future); default: now")


class RevokedSubject(BaseModel):
    subject: str
    revoked_before: str = Field(description="every token of the subject issued at or before "
                                            "this moment is refused (a later revocation "
                                            "given earlier stays in force)")


class ReplayResult(BaseModel):
    replayed: int
    ids: list[str]


class ReplayedMessage(BaseModel):
    id: str
    generation: int
    status: Status
    status_url: str


class Breaker(BaseModel):
    name: str
    state: Literal["closed", "open", "half-open"]
    failures: int
    opened_at: str | None
    closes_at: str | None


class BreakerList(BaseModel):
    breakers: list[Breaker]


class Caller(BaseModel):
    """The caller as the gateway sees it: what its token's roles grant under the policy."""

    subject: str
    roles: list[str]
    read: Literal["none", "own", "any"]
    submit: list[str] = Field(description="message type patterns it may send")
    subscribe: list[str] = Field(description="event topic patterns it may subscribe to")
    manage: dict[str, Literal["own", "any"]] = Field(
        description="each resource it may manage, and whose items: its own or anyone's")


class Queue(BaseModel):
    name: str
    depth: int = Field(description="messages waiting in the broker")
    consumers: int = Field(description="live workers that named this queue in their last "
                                       "heartbeat")


class Worker(BaseModel):
    name: str = Field(description="host, process id and a random part")
    queues: list[str]
    held: int = Field(description="messages it holds now")
    until: str = Field(description="when its last heartbeat lapses (UTC)")


class QueueList(BaseModel):
    queues: list[Queue]
    workers: list[Worker]


class Trace(BaseModel):
    id: str
    type: str | None
    status: str | None
    correlationid: str | None
    causationid: str | None
    attempts: int
    duration_ms: float
    timeline: list[dict[str, Any]]
    caused: list[Trace]


class WebhookCreate(BaseModel):
    """A webhook subscription: where to POST, which topics, and optionally the secret."""

    url: str = Field(description="http(s) URL; private and loopback addresses need the "
                                 "egress allowlist")
    topics: list[str] = Field(description='topic patterns, e.g. "alert.*", "*.dead"')
    secret: str | None = Field(None, description="HMAC secret: whsec_ and the base64 of a "
                                                 "24-64 byte key, or any 16+ characters "
                                                 "(used as its UTF-8 bytes); generated when "
                                                 "absent")
    description: str = ""


class Webhook(BaseModel):
    id: str
    url: str
    topics: list[str]
    description: str
    owner: str
    enabled: bool
    created_at: str
    failures: int
    disabled_at: str | None = None
    disabled_reason: str | None = None


class WebhookCreated(Webhook):
    secret: str = Field(description="shown only in this answer; signs every delivery")
    signing_secret: str = Field(description="the same secret in the whsec_ form that "
                                            "Standard Webhooks libraries take")
    signature_scheme: str = Field(description='"standard-webhooks": webhook-id, '
                                              'webhook-timestamp, webhook-signature')
    signature_header: str = Field(description="the deprecated signature header, sent too "
                                              "while INTEGRATION_WEBHOOK_LEGACY_SIGNATURE "
                                              "is on")


class WebhookList(BaseModel):
    items: list[Webhook]


class AlertmanagerItem(BaseModel):
    index: int = Field(description="The alert's position in the notification's ``alerts``")
    status: int = Field(description="202 when enqueued, 200 for a duplicate, otherwise the "
                                    "problem's status")
    fingerprint: str
    id: str | None = Field(None, description="The message's id (for a duplicate: the earlier "
                                             "message's)")
    status_url: str | None = None
    duplicate: bool = False
    problem: ProblemDocument | None = None


class AlertmanagerResponse(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[AlertmanagerItem]


class Schedule(BaseModel):
    """A schedule, its state and its next firing (UTC)."""

    model_config = ConfigDict(extra="allow")

    name: str
    every: float | None = Field(None, description="the interval in seconds")
    crontab: str | None = None
    type: str
    data: dict[str, Any]
    source: str
    subject: str | None = None
    enabled: bool
    catch_up: Literal["once", "skip"] | None = None
    owner: str = Field(description="owns the fired messages: the creator, or beat for the "
                                   "file's schedules")
    origin: Literal["file", "api", "cli"]
    created_at: str
    next_run_at: str | None = Field(None, description="when it fires next (none when paused)")
    fired_count: int = Field(description="firings sent by beat")


class ScheduleList(BaseModel):
    items: list[Schedule]


class FiredSchedule(BaseModel):
    schedule: str
    id: str = Field(description="the message this firing sent")
    status: Status
    status_url: str
