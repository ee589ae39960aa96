"""A schedule: when it fires (an interval or a crontab, in UTC) and which message it sends;
as stored, with who made it and how."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from integration.messages.envelope import FIRING_CHANNEL, FIRING_ID_PREFIX
from integration.messages.ownership import scoped

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)


#: The channel of fired messages, in their status records and metrics.
CHANNEL = FIRING_CHANNEL


#: The owner of the messages that file schedules fire.
FILE_OWNER = "beat"


NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


#: A stored entry's name: the name its creator gave, in the creator's namespace (the file's
#: schedules keep theirs), so two owners may each have a schedule of the same name.
ENTRY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,79}$"


def entry_name(owner: str, name: str) -> str:
    """Where ``owner``'s schedule ``name`` is kept."""
    return name if owner == FILE_OWNER else scoped(owner, name)


#: ``90``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"1d"``.
DURATION_PATTERN = r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?$"


CRONTAB_PATTERN = r"^\S+(?: \S+){4}$"


MIN_EVERY_SECONDS = 1.0


MAX_EVERY_SECONDS = 366 * 24 * 3600.0


Origin = Literal["file", "api", "cli"]


CatchUp = Literal["once", "skip"]


def parse_duration(text: str) -> float:
    """Seconds in ``"1h30m"``; ``ValueError`` when it is not a duration."""
    match = re.match(DURATION_PATTERN, text)
    if not match or not text or len(text) > 32:
        raise ValueError("a duration is seconds or e.g. 30s, 5m, 1h30m, 1d")
    days, hours, minutes, seconds = match.groups()
    return (int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60
            + float(seconds or 0))


def crontab_of(expression: str, app: Celery | None = None) -> Any:
    """A Celery crontab from a standard 5-field expression (minute hour day month weekday)."""
    from celery.schedules import crontab

    fields = expression.split()
    if len(fields) != 5:
        raise ValueError("a crontab has 5 fields: minute hour day-of-month month day-of-week")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        return crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                       month_of_year=month_of_year, day_of_week=day_of_week, app=app)
    except Exception as exc:  # noqa: BLE001 - celery's parser raises several kinds
        raise ValueError(f"invalid crontab {expression!r}: {exc}") from None


def _seconds(value: Any) -> Any:
    """A duration string as seconds (numbers pass on, to the range check)."""
    if isinstance(value, str):
        return parse_duration(value)
    return value


#: An interval in seconds, given as a number or a duration string.
Every = Annotated[
    float, Field(ge=MIN_EVERY_SECONDS, le=MAX_EVERY_SECONDS), BeforeValidator(_seconds),
    WithJsonSchema({"anyOf": [
        {"type": "number", "minimum": MIN_EVERY_SECONDS, "maximum": MAX_EVERY_SECONDS},
        {"type": "string", "pattern": DURATION_PATTERN, "minLength": 1, "maxLength": 32}]}),
]


class ScheduleSpec(BaseModel):
    """One schedule as a file, the API or the CLI gives it: when, and which message."""

    # Strict: a schedule's fields are not coerced ("true" is not a boolean).
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=NAME_PATTERN, description="unique; lower-case letters, digits, "
                                                        "'.', '_' and '-'")
    every: Every | None = Field(
        None, description='an interval: seconds, or a duration such as "30s", "5m", "1h30m"')
    crontab: str | None = Field(None, pattern=CRONTAB_PATTERN, max_length=200,
                                description='a 5-field crontab expression in UTC, e.g. '
                                            '"0 3 * * *"')
    type: str = Field(min_length=1, max_length=128, description="a registered message type")
    data: dict[str, Any] = Field(default_factory=dict,
                                 description="the message's data, valid for its type")
    source: str | None = Field(None, min_length=1, max_length=512,
                               description="default /integration/beat/<name>")
    subject: str | None = Field(None, max_length=512)
    enabled: bool = True
    catch_up: CatchUp | None = Field(
        None, description="a firing missed while no beat ran: fired once (once) or dropped "
                          "(skip); default INTEGRATION_BEAT_CATCH_UP")

    @field_validator("crontab")
    @classmethod
    def _crontab(cls, value: str | None) -> str | None:
        if value is not None:
            crontab_of(value)
        return value

    @model_validator(mode="after")
    def _one_timing(self) -> ScheduleSpec:
        if (self.every is None) == (self.crontab is None):
            raise ValueError("give exactly one of 'every' (an interval) or 'crontab'")
        return self

    def celery_schedule(self, app: Celery | None = None) -> Any:
        from celery.schedules import schedule

        if self.crontab is not None:
            return crontab_of(self.crontab, app)
        return schedule(timedelta(seconds=float(self.every or 0)), app=app)

    def spec(self) -> dict[str, Any]:
        """The fields a file or a request sets (what a file sync compares)."""
        return self.model_dump(mode="json", include=set(ScheduleSpec.model_fields))


class StoredSchedule(ScheduleSpec):
    """A schedule as kept in Redis: the spec plus who made it, and how."""

    owner: str = Field(min_length=1, max_length=256)
    origin: Origin
    created_at: str
    #: The creator's roles: every firing checks that the policy in force still lets them
    #: submit the type (None: the file's, or made before roles were kept).
    roles: list[str] | None = None

    @property
    def entry(self) -> str:
        return entry_name(self.owner, self.name)

    def source_or_default(self) -> str:
        return self.source or f"/integration/beat/{self.name}"

    def envelope(self, scheduled_at: datetime) -> dict[str, Any]:
        """The message of the firing due at ``scheduled_at`` (its id says which firing)."""
        raw: dict[str, Any] = {
            "id": firing_id(self.name, scheduled_at), "type": self.type,
            "source": self.source_or_default(),
            "time": scheduled_at.astimezone(UTC).isoformat(), "data": self.data,
        }
        if self.subject is not None:
            raw["subject"] = self.subject
        return raw


def scheduled_time(schedule: Any, last_run_at: datetime) -> datetime:
    """The moment the firing after ``last_run_at`` is due: the same for every beat that
    reads the entry, so it names the firing (its message id)."""
    from celery.schedules import crontab

    if isinstance(schedule, crontab):
        start, delta, _ = schedule.remaining_delta(last_run_at)
        return start + delta
    return last_run_at + schedule.run_every


def period_after(schedule: Any, moment: datetime) -> timedelta:
    """How long after ``moment`` the schedule's next firing comes."""
    return scheduled_time(schedule, moment) - moment


def firing_id(name: str, scheduled_at: datetime) -> str:
    """The message id of one firing: the same for a second beat or a retried firing, so a
    double fire is a 409 conflict rather than a second message."""
    moment = scheduled_at.astimezone(UTC)
    return f"{FIRING_ID_PREFIX}{name}.{moment:%Y%m%dT%H%M%S}.{moment.microsecond // 1000:03d}Z"
