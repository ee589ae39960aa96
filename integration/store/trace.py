"""The trace of a message: its timeline with durations, and the messages it caused."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from integration.store.records import StatusStore

MAX_DEPTH = 16
MAX_CAUSED = 50


def trace(store: StatusStore, message_id: str, depth: int = MAX_DEPTH,
          visible: Callable[[str | None], bool] | None = None) -> dict[str, Any] | None:
    """The message and what it caused; with ``visible`` (given a message's owner), messages
    it refuses are left out with everything below them."""
    record = store.get(message_id)
    if record is None or (visible is not None and not visible(record.get("owner"))):
        return None
    timeline: list[dict[str, Any]] = []
    first = previous = None
    for entry in record.get("history", []):
        at = datetime.fromisoformat(entry["at"])
        first = first or at
        step = dict(entry)
        step["since_previous_ms"] = round((at - previous).total_seconds() * 1000, 1) \
            if previous else 0.0
        timeline.append(step)
        previous = at
    envelope = record.get("envelope") or {}
    caused = []
    if depth > 1:
        for child in store.caused_by(message_id)[:MAX_CAUSED]:
            child_trace = trace(store, child, depth - 1, visible)
            if child_trace is not None:
                caused.append(child_trace)
    return {
        "id": record["id"],
        "type": record.get("type"),
        "status": record.get("status"),
        "owner": record.get("owner"),
        "correlationid": envelope.get("correlationid"),
        "causationid": envelope.get("causationid"),
        "attempts": record.get("attempts", 0),
        "duration_ms": round((previous - first).total_seconds() * 1000, 1)
        if first and previous else 0.0,
        "timeline": timeline,
        "caused": caused,
    }


def render(node: dict[str, Any], indent: int = 0,
           paint: Callable[[str], str] = str) -> list[str]:
    """A readable outline of a trace, for the CLI; ``paint`` styles each status (colours)."""
    pad = "  " * indent
    lines = [f"{pad}{node['type']} {node['id']}  {paint(str(node['status']))}  "
             f"attempts={node['attempts']}  {node['duration_ms']:.0f} ms"]
    for step in node["timeline"]:
        error = step.get("error")
        note = f"  {error.get('type')}: {str(error.get('message', ''))[:60]}" \
            if isinstance(error, dict) else ""
        details = _details(step)
        tail = f"{note}{'  ' + details if details else ''}"
        # Padded only when something follows: a painted status keeps its spaces.
        status = paint(f"{step['status']:<10}" if tail else str(step["status"]))
        lines.append(f"{pad}  +{step['since_previous_ms']:>8.1f} ms  {status}{tail}")
    for child in node["caused"]:
        lines += render(child, indent + 1, paint)
    return lines


def _details(step: dict[str, Any]) -> str:
    """A step's other fields as ``name=value`` words (``queue=alert  worker=w1@host``);
    a value that is not text as compact JSON."""
    words = []
    for name, value in step.items():
        if name in ("status", "at", "since_previous_ms", "error"):
            continue
        text = value if isinstance(value, str) else \
            json.dumps(value, default=str, separators=(",", ":"), sort_keys=True)
        words.append(f"{name}={text}")
    return "  ".join(words)
