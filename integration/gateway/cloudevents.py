"""The CloudEvents 1.0 HTTP binding on ``POST /messages``: structured, batched and binary modes.

The envelope already is a CloudEvent, so an event needs no translation: structured mode
(``application/cloudevents+json``) carries one event as the body, batched mode
(``application/cloudevents-batch+json``) a JSON array of them, and binary mode carries the
attributes as ``ce-*`` headers and the data as the body, with its ``Content-Type`` as
``datacontenttype``. Only JSON data is accepted (415 otherwise). Unlike a plain
``application/json`` message, a CloudEvent must carry the four required attributes itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

from flask import request

from integration.broker.submission import Result, Sender, Submitter
from integration.gateway.bodies import parse_json, read_body
from integration.messages.envelope import Envelope
from integration.messages.problems import (
    InvalidMessage,
    UnsupportedMedia,
    invalid,
)

STRUCTURED = "application/cloudevents+json"
BATCHED = "application/cloudevents-batch+json"
JSON = "application/json"
HEADER_PREFIX = "ce-"
#: Attributes every CloudEvent carries (a plain message may leave ``id`` and ``specversion``
#: to the service).
REQUIRED = ("specversion", "id", "source", "type")
#: In binary mode these travel as the Content-Type and the body, never as ``ce-`` headers.
NOT_HEADERS = frozenset({"data", "data_base64", "datacontenttype"})


class Mode(StrEnum):
    PLAIN = "plain"  # application/json: an envelope or a JSON array of them
    STRUCTURED = "structured"
    BATCHED = "batched"
    BINARY = "binary"

    @property
    def channel(self) -> str:
        """The channel label of status records and metrics."""
        return "rest" if self is Mode.PLAIN else "cloudevents"


def request_mode() -> Mode:
    """The mode of this request: an ``application/cloudevents`` media type means a structured
    (or batched) event, whatever headers come with it; else ``ce-specversion`` means binary."""
    mimetype = request.mimetype
    if mimetype == BATCHED:
        return Mode.BATCHED
    if mimetype.startswith("application/cloudevents"):
        return Mode.STRUCTURED  # a non-JSON event format is refused when the body is read
    if "ce-specversion" in request.headers:
        return Mode.BINARY
    return Mode.PLAIN


def read(mode: Mode) -> bytes:
    """The raw body; in binary mode the data's media type must be JSON (or absent)."""
    if mode is not Mode.BINARY:
        return read_body()
    if request.mimetype not in ("", JSON):
        raise UnsupportedMedia(f"In binary mode the data must be {JSON}, not "
                               f"{request.mimetype[:100]!r}.")
    return request.get_data(cache=False)


def _attribute_headers() -> dict[str, str]:
    return {name.lower()[len(HEADER_PREFIX):]: value for name, value in request.headers.items()
            if name.lower().startswith(HEADER_PREFIX)}


def identity(mode: Mode, raw: bytes) -> bytes:
    """What makes two requests the same for an Idempotency-Key: in binary mode the attribute
    headers too, since two events may well carry the same data."""
    if mode is not Mode.BINARY:
        return raw
    headers = sorted(_attribute_headers().items())
    return b"\n".join([*(f"{k}:{v}".encode() for k, v in headers), b"", raw])


def binary_event(raw: bytes) -> dict[str, Any]:
    """The event of a binary-mode request: ``ce-*`` headers (percent-decoded) and the body."""
    attributes = {name: unquote(value) for name, value in _attribute_headers().items()}
    errors = [{"loc": ["header", HEADER_PREFIX + name], "type": "not_a_header",
               "msg": "carried by the Content-Type and the body in binary mode"}
              for name in sorted(NOT_HEADERS & attributes.keys())]
    missing = [name for name in REQUIRED if name not in attributes]
    errors += [{"loc": ["header", HEADER_PREFIX + name], "type": "missing",
                "msg": "required by CloudEvents 1.0"} for name in missing]
    if errors:
        named = ", ".join(HEADER_PREFIX + name for name in missing)
        raise invalid(errors, f"Missing CloudEvents header(s): {named}." if missing
                      else "Invalid CloudEvents headers.")
    event: dict[str, Any] = {**attributes, "datacontenttype": JSON}
    if raw:
        event["data"] = parse_json(raw)
    return event


def in_headers(problem: InvalidMessage, event: dict[str, Any]) -> InvalidMessage:
    """The problem with errors located where a binary-mode sender put the value: a header
    or the body."""
    def locate(loc: list[Any]) -> list[Any]:
        if loc and loc[0] == "data":
            return ["body", *loc[1:]]
        if loc and isinstance(loc[0], str) and loc[0] in event:
            return ["header", HEADER_PREFIX + loc[0], *loc[1:]]
        return loc

    errors = problem.extensions.get("errors") or []
    return invalid([{**e, "loc": locate(list(e["loc"]))} for e in errors],
                   problem.detail or "The event is invalid.")


def checked(event: Any, loc: Sequence[str | int] = ()) -> Any:
    """A structured event with the required attributes and JSON data, else its problem."""
    if not isinstance(event, dict):
        return event  # the submitter's own check says "a message is a JSON object"
    if "data_base64" in event:
        raise UnsupportedMedia("Only JSON data is accepted, not data_base64.")
    media = event.get("datacontenttype")
    if media is not None:
        if not isinstance(media, str) or media.split(";")[0].strip().lower() != JSON:
            raise UnsupportedMedia(f"Only {JSON} data is accepted.")
        event = {**event, "datacontenttype": JSON}  # parameters such as charset say nothing
    missing = [name for name in REQUIRED if name not in event]
    if missing:
        raise invalid([{"loc": [*loc, name], "type": "missing",
                        "msg": "required by CloudEvents 1.0"} for name in missing],
                      f"Missing CloudEvents attribute(s): {', '.join(missing)}.")
    return event


def submit_events(submitter: Submitter, events: Sequence[Any], *, owner: str,
                  may_submit: Callable[[str], bool], correlation_id: str,
                  sender: Sender | None = None, correlation_given: bool = False
                  ) -> list[Result]:
    """A batched-mode request: one result per event, in order, like a plain batch."""
    def parse(index: int, event: Any) -> Envelope:
        return submitter.parse(checked(event, [index]), loc=[index], may_submit=may_submit,
                               correlation_id=correlation_id, sender=sender,
                               correlation_given=correlation_given)

    return submitter.submit_each(events, parse, owner=owner, channel=Mode.BATCHED.channel)
