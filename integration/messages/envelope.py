"""The message envelope: CloudEvents 1.0 attributes plus ``correlationid`` and ``causationid``."""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from integration.messages.tracecontext import (
    TRACEPARENT,
    TRACESTATE,
    TraceContext,
    traceparent_error,
    tracestate_error,
)

#: CloudEvents extension attribute names: lower-case ASCII letters and digits, at most 20.
EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
MAX_EXTENSIONS = 16
MAX_EXTENSION_VALUE_LENGTH = 1024
#: Set by the service from the token and the store, never by a sender (no mass assignment).
RESERVED_ATTRIBUTES = frozenset({"owner", "channel", "status", "attempts", "roles", "sub",
                                 "principal", "generation"})
#: Ids travel in URLs and Redis keys, so they are restricted to URL-safe characters. A client
#: gives at most 128 of them; its ids are then scoped to it (``integration.ownership``).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,159}$"
#: The channel of scheduled firings, and the prefix of their ids (``beat.<name>.<time>``,
#: predictable by design so that a double fire is a duplicate). Only that channel may submit
#: an id with the prefix: a client could otherwise take a firing's id first and suppress it.
FIRING_CHANNEL = "beat"
FIRING_ID_PREFIX = "beat."


#: CloudEvents Distributed Tracing extension attributes, checked as W3C Trace Context.
_TRACE_CHECKS = {TRACEPARENT: traceparent_error, TRACESTATE: tracestate_error}


def new_id() -> str:
    """A fresh message id: a random (version 4) UUID in hex, as ``uuid.uuid4().hex`` writes
    it, without building a ``uuid.UUID`` (docs/decisions/0009-message-ids.md)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


def derived_id(parent: str, key: str) -> str:
    """A stable id for what ``parent`` causes under ``key`` (same inputs, same id)."""
    return hashlib.sha256(f"{parent}|{key}".encode()).hexdigest()[:32]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """One message. Unknown attributes are allowed only as valid CloudEvents extensions."""

    model_config = ConfigDict(extra="allow", str_max_length=4096, strict=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=new_id, pattern=ID_PATTERN)
    source: str = Field(min_length=1, max_length=512)
    type: str = Field(min_length=1, max_length=128)
    time: Annotated[AwareDatetime, Field(strict=False)] = Field(default_factory=utc_now)
    subject: str | None = Field(None, max_length=512)
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = Field(None, max_length=1024)
    data: dict[str, Any] = Field(default_factory=dict)
    correlationid: str | None = Field(None, pattern=ID_PATTERN)
    causationid: str | None = Field(None, pattern=ID_PATTERN)

    @model_validator(mode="after")
    def _check_extensions(self) -> Envelope:
        extra = self.model_extra or {}
        if len(extra) > MAX_EXTENSIONS:
            raise ValueError(f"at most {MAX_EXTENSIONS} extension attributes are allowed")
        for name, value in extra.items():
            if name in RESERVED_ATTRIBUTES:
                raise ValueError(f"{name!r} is set by the service from your token, not by you")
            if not EXTENSION_NAME.match(name):
                raise ValueError(
                    f"unknown attribute {name[:40]!r}: extension names are 1-20 lower-case "
                    "letters or digits"
                )
            if name in _TRACE_CHECKS:
                # The Distributed Tracing extension: a malformed context is refused, not
                # carried on to every step of the chain.
                error = _TRACE_CHECKS[name](value)
                if error is not None:
                    raise ValueError(error)
                continue
            if isinstance(value, bool) or (isinstance(value, int) and abs(value) < 2**63):
                continue
            if not isinstance(value, str) or len(value) > MAX_EXTENSION_VALUE_LENGTH:
                raise ValueError(
                    f"extension {name!r} must be a string of at most "
                    f"{MAX_EXTENSION_VALUE_LENGTH} characters, a 64-bit integer or a boolean"
                )
        if self.correlationid is None:
            self.correlationid = self.id
        return self

    def continues(self, context: TraceContext) -> None:
        """Carry ``context`` (the step that sends this message) as the Distributed Tracing
        extension, unless the sender gave the message a context of its own."""
        extra = self.__pydantic_extra__
        if extra is not None and TRACEPARENT not in extra:
            extra.update(context.attributes())

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready form sent to the broker and stored with the status."""
        return self.model_dump(mode="json", exclude_none=True)
