"""The envelope: CloudEvents attributes, defaults, and the extension rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from integration.envelope import MAX_EXTENSIONS, Envelope


def test_id_time_and_correlation_are_filled_when_absent() -> None:
    """The gateway fills id and time; the chain starts at the message itself."""
    envelope = Envelope(type="metric", source="host-1")
    assert envelope.specversion == "1.0"
    assert envelope.id and envelope.time.tzinfo is not None
    assert envelope.correlationid == envelope.id


def test_valid_extensions_are_kept_on_the_wire() -> None:
    envelope = Envelope.model_validate({"type": "t", "source": "s", "traceparent": "00-ab",
                                        "priority": 3, "urgent": True})
    wire = envelope.to_wire()
    assert (wire["traceparent"], wire["priority"], wire["urgent"]) == ("00-ab", 3, True)


@pytest.mark.parametrize("attributes", [
    {"Bad_Name": "x"},
    {"waytoolongextensionname": "x"},
    {"nested": {"a": 1}},
    {"toolong": "x" * 2000},
    {f"ext{i}": i for i in range(MAX_EXTENSIONS + 1)},
])
def test_invalid_extensions_are_rejected(attributes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Envelope.model_validate({"type": "t", "source": "s", **attributes})


@pytest.mark.parametrize("attributes", [
    {"specversion": "0.3"},
    {"id": "../etc"},
    {"time": "2026-01-01T00:00:00"},  # no time zone
    {"datacontenttype": "text/plain"},
    {"source": ""},
    {"data": [1, 2]},
])
def test_invalid_core_attributes_are_rejected(attributes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Envelope.model_validate({"type": "t", "source": "s", **attributes})
