"""The schedule model and file: durations, crontabs, firing ids and clear file errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from celery.schedules import crontab, schedule

from integration.app import build_submitter
from integration.schedules.file import Parse, load_schedule_file
from integration.schedules.spec import ScheduleSpec, firing_id, parse_duration, scheduled_time
from integration.settings import ConfigurationError, Settings


@pytest.fixture
def parse() -> Parse:
    """The submit path's validation (it connects to nothing until a message is sent)."""
    return build_submitter(Settings(), origin="test").parse


@pytest.mark.parametrize(("text", "seconds"), [("30", 30), ("30s", 30), ("5m", 300),
                                               ("1h30m", 5400), ("1d", 86400), ("1.5s", 1.5)])
def test_durations(text: str, seconds: float) -> None:
    """Intervals are written as seconds or with d/h/m/s units."""
    assert parse_duration(text) == seconds


def test_an_interval_needs_at_least_a_second() -> None:
    """Sub-second intervals are refused (beat's resolution)."""
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        ScheduleSpec.model_validate({"name": "a", "every": "0.5s", "type": "event"})


def test_a_firing_id_names_the_schedule_and_its_time() -> None:
    """Two sends of one firing carry the same id; it is a valid message id."""
    moment = datetime(2025, 3, 1, 3, 0, 0, 123456, tzinfo=UTC)
    assert firing_id("nightly", moment) == "beat.nightly.20250301T030000.123Z"


def test_the_scheduled_time_of_a_crontab_is_its_next_point() -> None:
    """A crontab firing is named after the cron point it is for, not the time it was sent."""
    last = datetime(2025, 3, 1, 2, 17, 45, tzinfo=UTC)
    assert scheduled_time(crontab(minute="0", hour="3"), last) == \
        datetime(2025, 3, 1, 3, 0, tzinfo=UTC)
    assert scheduled_time(schedule(90), last) == datetime(2025, 3, 1, 2, 19, 15, tzinfo=UTC)


def test_the_shipped_schedule_file_is_valid(parse: Parse) -> None:
    """``make run`` starts beat with the shipped file: one hourly heartbeat event."""
    [heartbeat] = load_schedule_file(None, parse)
    assert (heartbeat.name, heartbeat.every, heartbeat.type) == ("heartbeat", 3600, "event")


@pytest.mark.parametrize(("text", "expected"), [
    ("schedules:\n  - {name: a, every: 1, type: nope}",
     "schedules[0] (a): type: unknown message type"),
    ("schedules:\n  - {name: a, every: 1, crontab: '* * * * *', type: event}",
     "schedules[0] (a): (entry): Value error, give exactly one of 'every'"),
    ("schedules:\n  - {name: a, crontab: '0 25 * * *', type: event}",
     "schedules[0] (a): crontab: Value error, invalid crontab '0 25 * * *'"),
    ("schedules:\n  - {name: a, every: 1, type: metric, data: {name: cpu}}",
     "schedules[0] (a): data.value: Field required"),
    ("schedules:\n  - {name: a, every: 1, type: event}\n  - {name: a, every: 2, type: event}",
     "schedules[1] (a): name: 'a' is used twice"),
    ("schedules:\n  - {name: a, every: 1, type: event, enabled: 'yes'}",
     "schedules[0] (a): enabled: Input should be a valid boolean"),
    ("schedules: [\n", "cannot be read"),
    ("other: 1", "cannot be read"),
])
def test_a_bad_schedule_file_names_file_entry_and_field(tmp_path: Path, parse: Parse,
                                                        text: str, expected: str) -> None:
    """Every error of the file is reported at once, each with its entry and field."""
    path = tmp_path / "schedules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as error:
        load_schedule_file(str(path), parse)
    assert f"INTEGRATION_SCHEDULE_FILE {path}" in str(error.value)
    assert expected in str(error.value)
