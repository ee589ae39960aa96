"""How records are written and read: timestamps, history entries, changed fields, decoded
hashes and script replies, and the record as shown outside. No I/O."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from integration.messages.status import Status
from integration.store.model import DeliveryState, Transition

#: Fields holding JSON documents rather than plain strings.
_JSON_FIELDS = ("envelope", "result", "error", "last_error", "hold", "event")
_INT_FIELDS = ("attempts", "accepted_ms", "generation", "inline")
#: Which timestamp field each status sets (the rest set ``<status>_at``).
_TIMESTAMP_FIELD = {
    Status.PROCESSING: "started_at",
    Status.SUCCEEDED: "finished_at",
    Status.DEAD: "finished_at",
}
#: Fields a record keeps for the store's own use, never shown.
INTERNAL_FIELDS = ("accepted_ms", "request", "event")
#: Kept in the errors of records written before tracebacks went to the worker's log only.
_LOG_ONLY = "traceback"
_AS_STDLIB = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


def now_ms() -> int:
    return int(time.time() * 1000)


@lru_cache(maxsize=256)  # a batch's records share their timestamps
def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def history_entry(status: str, at_ms: int, detail: Mapping[str, Any] | None) -> str:
    entry: dict[str, Any] = {"status": str(status), "at": iso(at_ms)}
    if detail:
        entry.update(detail)
    # As json.dumps(..., default=str) writes it (datetimes through str too), several times
    # faster: every message writes two or more of these.
    return orjson.dumps(entry, default=str, option=_AS_STDLIB).decode()


def changed_fields(status: Status, at_ms: int, fields: Mapping[str, Any] | None) -> list[Any]:
    """The field/value pairs a move to ``status`` writes: its timestamp, ``updated_at`` and
    ``fields`` (JSON documents encoded), flattened for HSET."""
    flat: list[Any] = [_TIMESTAMP_FIELD.get(status, f"{status}_at"), iso(at_ms),
                       "updated_at", iso(at_ms)]
    for name, value in (fields or {}).items():
        flat += [name, json.dumps(value) if name in _JSON_FIELDS else value]
    return flat


def decode_record(raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in raw.items():
        name, text = key.decode(), value.decode()
        if name in _JSON_FIELDS:
            record[name] = json.loads(text)
        elif name in _INT_FIELDS:
            record[name] = int(text)
        else:
            record[name] = text
    return record


def decode_delivery_state(values: Sequence[bytes | None]) -> DeliveryState:
    """The delivery state from the record's ``status``, ``generation``, ``released_by``,
    ``channel``, ``accepted_ms``, ``queued_at`` and ``owner``, in that order."""
    status, generation, released, channel, accepted_ms, queued_at, owner = (
        v.decode() if v else None for v in values)
    return DeliveryState(
        status=status, generation=int(generation) if generation else 1,
        released=bool(released), channel=channel or "direct",
        accepted=int(accepted_ms) / 1000 if accepted_ms else None,
        queued=datetime.fromisoformat(queued_at).timestamp() if queued_at else None,
        owner=owner or "direct")


def decode_transition(reply: Any) -> Transition | None:
    """The transition script's reply; None when the message has no record."""
    code, previous, *rest = reply
    if code == -1:
        return None
    previous_text = previous.decode() if isinstance(previous, bytes) else previous
    return Transition(applied=code == 1, previous=previous_text or None,
                      attempts=int(rest[0]) if rest else 0)


def parse_cursor(cursor: str | None) -> tuple[Any, str | None]:
    """A listing cursor ``<score>:<id>`` as (score, id); the top without one."""
    if not cursor:
        return "+inf", None
    score, _, member = cursor.partition(":")
    try:
        return int(score), member or None
    except ValueError:
        raise ValueError("invalid cursor") from None


def public(record: dict[str, Any]) -> dict[str, Any]:
    """The record as the API and CLI show it: no internal fields, and no error traceback
    (a record written by an earlier version may hold one)."""
    shown = {k: v for k, v in record.items() if k not in INTERNAL_FIELDS}
    for name in ("error", "last_error"):
        if isinstance(shown.get(name), dict):
            shown[name] = _without_traceback(shown[name])
    for name in ("history", "attempt_errors"):
        if isinstance(shown.get(name), list):
            shown[name] = [_without_traceback(entry) for entry in shown[name]]
    return shown


def _without_traceback(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    cleaned = {k: v for k, v in value.items() if k != _LOG_ONLY}
    if isinstance(cleaned.get("error"), dict):
        cleaned["error"] = _without_traceback(cleaned["error"])
    return cleaned
