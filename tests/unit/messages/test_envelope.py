"""The envelope: CloudEvents attributes, defaults, and the extension rules."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from integration.messages.envelope import MAX_EXTENSIONS, Envelope


def test_id_time_and_correlation_are_filled_when_absent() -> None:
    """The gateway fills id and time; the chain starts at the message itself."""
    envelope = Envelope(type="metric", source="host-1")
    assert envelope.specversion == "1.0"
    assert envelope.id and envelope.time.tzinfo is not None
    assert envelope.correlationid == envelope.id


def test_valid_extensions_are_kept_on_the_wire() -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    envelope = Envelope.model_validate({"type": "t", "source": "s", "traceparent": traceparent,
                                        "priority": 3, "urgent": True})
    wire = envelope.to_wire()
    assert (wire["traceparent"], wire["priority"], wire["urgent"]) == (traceparent, 3, True)


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


def test_generated_ids_are_version_4_uuids_in_hex() -> None:
    import uuid

    from integration.messages.envelope import new_id

    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for value in list(ids)[:50]:
        parsed = uuid.UUID(hex=value)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and parsed.hex == value


def test_a_forked_child_never_repeats_its_parents_ids() -> None:
    """The gateway's and worker's processes are forked after their first ids were made; a
    child's ids are its own (no random state is inherited)."""
    from integration.messages.envelope import new_id

    new_id()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave at once
        os.write(writer, " ".join(new_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(writer)
    child = os.read(reader, 4096).decode().split()
    os.close(reader)
    os.waitpid(pid, 0)
    parent = [new_id() for _ in range(3)]
    assert len(child) == 3 and not set(child) & set(parent)


def test_ids_are_unique_across_threads() -> None:
    """Threads taking ids at once (a gateway's gevent or gthread workers) each get their own."""
    from concurrent.futures import ThreadPoolExecutor

    from integration.messages.envelope import new_id

    with ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(lambda _: [new_id() for _ in range(2000)], range(8)))
    assert len({i for batch in batches for i in batch}) == 16000


def test_history_entries_are_written_as_the_standard_library_writes_them() -> None:
    """The fast encoder keeps the stored format: compact, datetimes and unknown types
    through ``str``, integer keys as strings, non-ASCII as is or escaped (both read back)."""
    import json
    from datetime import UTC, datetime

    from integration.store.codec import history_entry, iso

    when = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    detail = {"channel": "rest", "at_time": when, "count": 3, 7: "seven", "text": "größe"}
    entry = history_entry("queued", 1_795_000_000_000, detail)
    expected = {"status": "queued", "at": iso(1_795_000_000_000),
                "channel": "rest", "at_time": str(when), "count": 3, "7": "seven",
                "text": "größe"}
    assert json.loads(entry) == expected
    assert '", "' not in entry and '": ' not in entry
