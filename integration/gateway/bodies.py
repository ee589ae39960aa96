"""Reading request bodies: media type, size limit and JSON parsing, in one place."""

from __future__ import annotations

from typing import Any

from flask import request

from integration.messages import jsonlimits
from integration.messages.problems import BadRequest, UnsupportedMedia, invalid

#: Media types a body may use (CloudEvents' structured and batch modes are JSON too).
JSON_MEDIA_TYPES = frozenset({
    "application/json", "application/cloudevents+json", "application/cloudevents-batch+json",
})


def read_body() -> bytes:
    """The raw body: 415 for another media type, 413 over the limit (before reading it all)."""
    if request.mimetype not in JSON_MEDIA_TYPES:
        raise UnsupportedMedia("Send the message as application/json.")
    return request.get_data(cache=False)


def parse_json(body: bytes) -> Any:
    """The body as JSON; 400 if it is not, 422 if nested too deeply for the parser."""
    try:
        return jsonlimits.loads(body)
    except RecursionError:
        raise invalid([{"loc": [], "msg": "nested too deeply", "type": "too_deep"}],
                      "The body is nested too deeply.") from None
    except ValueError as exc:
        reason = str(exc).split(": line")[0][:200]
        raise BadRequest(f"The body is not valid JSON: {reason}") from None


def json_body(*, allow_empty: bool = False) -> Any:
    """Read and parse the body; an empty body is ``{}`` when ``allow_empty``."""
    if allow_empty and not request.content_length and not request.mimetype:
        return {}
    return parse_json(read_body())
