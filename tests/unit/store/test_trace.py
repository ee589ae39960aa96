"""A trace rendered for people: one line per message and step, details as words."""

from __future__ import annotations

from typing import Any

from integration.store.trace import render


def _node(**overrides: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": "m1", "type": "metric", "status": "succeeded", "attempts": 1,
        "duration_ms": 12.0, "caused": [],
        "timeline": [
            {"status": "accepted", "at": "2026-01-01T00:00:00+00:00", "since_previous_ms": 0.0,
             "channel": "rest"},
            {"status": "processing", "at": "2026-01-01T00:00:00.010+00:00",
             "since_previous_ms": 10.0, "worker": "w1@host", "attempt": 1,
             "labels": {"b": 2, "a": 1}},
            {"status": "dead", "at": "2026-01-01T00:00:00.012+00:00", "since_previous_ms": 2.0,
             "error": {"type": "PermanentError", "message": "no"}},
        ],
    }
    node.update(overrides)
    return node


def test_step_details_are_name_value_words_not_reprs() -> None:
    """Text stays as it is, other values are compact JSON; no Python dict reprs."""
    lines = render(_node())
    assert lines[0] == "metric m1  succeeded  attempts=1  12 ms"
    assert lines[1].endswith("accepted    channel=rest")
    assert lines[2].endswith('worker=w1@host  attempt=1  labels={"a":1,"b":2}')
    assert lines[3].endswith("dead        PermanentError: no")
    assert not any("{'" in line for line in lines)


def test_caused_messages_are_indented_under_their_cause() -> None:
    child = _node(id="a1", type="alert", timeline=[])
    lines = render(_node(caused=[child]))
    assert lines[-1] == "  alert a1  succeeded  attempts=1  12 ms"


def test_a_step_without_details_ends_at_its_painted_status() -> None:
    """No padding after the last word, even inside the colour codes."""
    step = {"status": "queued", "at": "2026-01-01T00:00:00+00:00", "since_previous_ms": 0.0}
    lines = render(_node(timeline=[step]), paint=lambda text: f"<{text}>")
    assert lines[1] == "  +     0.0 ms  <queued>"
