"""The rules every message meets: a JSON object within the limits, a valid envelope, a
registered type and a valid payload of it.

The gateway checks them before it enqueues and the worker again for direct callers; both call
these functions, so the two cannot disagree. Each raises ``InvalidMessage`` with every error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from integration.messages.envelope import Envelope
from integration.messages.jsonlimits import JsonLimits
from integration.messages.problems import invalid, validation_errors
from integration.messages.registry import MessageType, Registry

Loc = Sequence[str | int]


def parse_envelope(raw: Any, limits: JsonLimits, loc: Loc = ()) -> Envelope:
    """The envelope of ``raw``: a JSON object within ``limits`` with valid attributes."""
    if not isinstance(raw, Mapping):
        raise invalid([{"loc": list(loc), "msg": "a message is a JSON object",
                        "type": "object_type"}], "The message is not a JSON object.")
    too_big = limits.errors(raw if isinstance(raw, dict) else dict(raw), tuple(loc))
    if too_big:
        raise invalid(too_big, "The message exceeds a size, depth or number limit, or "
                      "holds text that is not valid Unicode.")
    try:
        return Envelope.model_validate(raw)
    except ValidationError as exc:
        raise invalid(validation_errors(exc, loc), "The envelope is invalid.") from None


def registered_type(envelope: Envelope, registry: Registry, loc: Loc = ()) -> MessageType:
    """The registration of the envelope's type; an unregistered type is invalid."""
    if envelope.type not in registry:
        raise invalid([{"loc": [*loc, "type"], "type": "unknown_type",
                        "msg": "unknown message type; GET /api/v1/types lists them"}],
                      "The message type is not registered.")
    return registry.get(envelope.type)


def valid_payload(envelope: Envelope, message_type: MessageType, loc: Loc = ()) -> Any:
    """The envelope's data as its type's payload model."""
    try:
        return message_type.payload.model_validate(envelope.data)
    except ValidationError as exc:
        raise invalid(validation_errors(exc, [*loc, "data"]),
                      f"The data is not a valid {envelope.type!r} payload.") from None


def validate(raw: Any, registry: Registry, limits: JsonLimits) -> tuple[Envelope, Any]:
    """The envelope and payload of ``raw``, by every rule above in order (the worker's check;
    the gateway runs the same steps with its authorization between type and payload)."""
    envelope = parse_envelope(raw, limits)
    return envelope, valid_payload(envelope, registered_type(envelope, registry))
