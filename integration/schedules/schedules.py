"""Scheduled messages: the schedule model, the schedule file, and schedules kept in Redis.

Schedules are celery-redbeat entries (one Redis hash each, plus its sorted set of due
times), so the beat that fires them reads every change at its next loop, and the gateway
and the CLI manage them without talking to beat. Each entry carries the whole validated
schedule in its task arguments; a firing turns it into an ordinary message.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import redis
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from integration.messages.envelope import FIRING_CHANNEL, FIRING_ID_PREFIX, Envelope
from integration.messages.ownership import scoped
from integration.messages.problems import Conflict, Forbidden, InvalidMessage, Problem
from integration.messages.routing import DEFAULT_QUEUE
from integration.settings import ConfigurationError, Settings

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

#: The task beat sends for each firing: ``fire(schedule: dict, scheduled_at: str)``.
FIRE_TASK = "integration.schedule.fire"
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
#: Validates a message as the submit path does (``Submitter.parse``).
Parse = Callable[..., Envelope]


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


# -- the schedule file --------------------------------------------------------------------

class ScheduleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedules: list[dict[str, Any]] = Field(default_factory=list)


def _where(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc) or "(entry)"


def check_message(spec: ScheduleSpec, parse: Parse,
                  may_submit: Callable[[str], bool] | None = None) -> None:
    """Validate the message a schedule fires as the submit path will: ``InvalidMessage``
    (errors located at the schedule's fields) or ``Forbidden``."""
    trial = StoredSchedule(**spec.model_dump(), owner="check", origin="api",
                           created_at="").envelope(datetime.now(UTC))
    parse(trial, may_submit=may_submit, channel=CHANNEL)


def load_schedule_file(path: str | None, parse: Parse) -> list[ScheduleSpec]:
    """Read and validate a schedule file (the shipped one when ``path`` is None); a broken
    file stops beat with every error, naming the file, the entry and the field."""
    label = path or "(default) default_schedule.yaml"
    try:
        text = Path(path).read_text() if path else \
            files("integration.schedules").joinpath("default_schedule.yaml").read_text()
        document = ScheduleFile.model_validate(yaml.safe_load(text) or {})
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigurationError(
            f"INTEGRATION_SCHEDULE_FILE {label} cannot be read: {exc}") from None
    problems: list[str] = []
    specs: list[ScheduleSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(document.schedules):
        entry = f"schedules[{index}]"
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            entry += f" ({raw['name']})"
        try:
            spec = ScheduleSpec.model_validate(raw)
        except ValidationError as exc:
            problems += [f"{entry}: {_where(e['loc'])}: {e['msg']}"
                         for e in exc.errors(include_url=False)]
            continue
        if spec.name in seen:
            problems.append(f"{entry}: name: {spec.name!r} is used twice")
        seen.add(spec.name)
        try:
            check_message(spec, parse)
        except InvalidMessage as problem:
            problems += [f"{entry}: {_where(e['loc'])}: {e['msg']}"
                         for e in problem.extensions.get("errors", [])]
            continue
        specs.append(spec)
    if problems:
        raise ConfigurationError(f"INTEGRATION_SCHEDULE_FILE {label} is invalid:\n  "
                                 + "\n  ".join(problems))
    return specs


# -- schedules in Redis (redbeat entries) --------------------------------------------------

def beat_key_prefix(key_prefix: str) -> str:
    """Where redbeat keeps entries, due times and its lock: under the service's prefix."""
    return f"{key_prefix}:beat:"


def refusals_key(beat_prefix: str) -> str:
    """The hash of firings refused because their creator's rights no longer hold, by entry
    (beside redbeat's keys, never among them: no schedule name can reach it)."""
    return f"{beat_prefix.rstrip(':')}-refusals"


def record_refusal(client: redis.Redis, beat_prefix: str, entry: str,
                   reason: str | None) -> None:
    """Note why the last firing of ``entry`` was refused (None: it was not; clears it)."""
    if reason is None:
        client.hdel(refusals_key(beat_prefix), entry)
        return
    client.hset(refusals_key(beat_prefix), entry, json.dumps(
        {"refused_at": datetime.now(UTC).isoformat(), "refused_reason": reason}))


def redbeat_options(settings: Settings) -> dict[str, Any]:
    """The Redis client options of redbeat (never the broker's transport options)."""
    return {"socket_timeout": 10, "socket_connect_timeout": 5,
            # Ride out a short Redis outage; a longer one loses the lock and beat exits
            # (its supervisor restarts it, and it waits for the lock again).
            "retry_period": settings.beat_lock_timeout_seconds}


@dataclass
class SyncReport:
    """What a file sync changed."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept_runtime: list[str] = field(default_factory=list)


class Schedules:
    """Create, list, pause, resume and delete schedules; beat sees each change at its next
    loop (``INTEGRATION_BEAT_MAX_LOOP_INTERVAL_SECONDS``)."""

    def __init__(self, app: Celery, parse: Parse) -> None:
        from redbeat.schedulers import ensure_conf, get_redis

        self.app = app
        self.parse = parse
        self.conf = ensure_conf(app)
        self.client: redis.Redis = get_redis(app)

    @classmethod
    def from_settings(cls, settings: Settings, parse: Parse) -> Schedules:
        from integration.broker.celery_app import create_celery

        app = create_celery("integration.schedules")
        app.conf.update(redbeat_redis_url=settings.redis_url,
                        redbeat_key_prefix=beat_key_prefix(settings.key_prefix),
                        redbeat_redis_options=redbeat_options(settings))
        return cls(app, parse)

    # -- reading -------------------------------------------------------------------------
    def _key(self, name: str) -> str:
        return f"{self.conf.key_prefix}{name}"

    def _names(self) -> list[str]:
        prefix = self.conf.key_prefix
        keys = cast(list[str], self.client.zrange(self.conf.schedule_key, 0, -1))
        return sorted(str(k)[len(prefix):] for k in keys if str(k).startswith(prefix))

    def _entry(self, name: str) -> Any | None:
        from redbeat.schedulers import RedBeatSchedulerEntry

        if not re.match(ENTRY_PATTERN, name):
            return None
        try:
            entry = RedBeatSchedulerEntry.from_key(self._key(name), app=self.app)
        except KeyError:
            return None
        return entry if entry.task == FIRE_TASK else None

    def get(self, name: str) -> dict[str, Any] | None:
        entry = self._entry(name)
        return self._describe(entry) if entry is not None else None

    def all(self) -> list[dict[str, Any]]:
        found = (self._entry(name) for name in self._names())
        return [self._describe(entry) for entry in found if entry is not None]

    def find(self, name: str) -> list[str]:
        """The entries ``name`` may mean: the entry of that id, else every schedule of that
        name (whoever made it)."""
        if self._entry(name) is not None:
            return [name]
        found = []
        for entry in self._names():
            stored = self.stored(entry)
            if stored is not None and stored.name == name:
                found.append(entry)
        return found

    def stored(self, name: str) -> StoredSchedule | None:
        entry = self._entry(name)
        return StoredSchedule.model_validate_json(entry.kwargs["schedule"]) if entry else None

    def _describe(self, entry: Any) -> dict[str, Any]:
        stored = StoredSchedule.model_validate_json(entry.kwargs["schedule"])
        next_run = (scheduled_time(entry.schedule, entry.last_run_at)
                    if stored.enabled and entry.last_run_at else None)
        refused = cast(str | bytes | None, self.client.hget(self._refusals_key, entry.name))
        return {**stored.model_dump(mode="json", exclude_none=True),
                "id": entry.name,
                **(json.loads(refused) if refused else {}),
                "source": stored.source_or_default(),
                # Past when beat is not running: the firing is then due as soon as it is.
                "next_run_at": next_run.isoformat() if next_run else None,
                "fired_count": getattr(entry, "total_run_count", 0)}

    # -- writing -------------------------------------------------------------------------
    def _new_entry(self, stored: StoredSchedule, last_run_at: datetime,
                   name: str | None = None) -> Any:
        """A redbeat entry for ``stored``, under ``name`` (its entry's, by default)."""
        from redbeat.schedulers import RedBeatSchedulerEntry

        return RedBeatSchedulerEntry(
            name=name or stored.entry, task=FIRE_TASK, schedule=stored.celery_schedule(self.app),
            # A JSON string: redbeat's decoder would rewrite any "__type__" key in the data.
            kwargs={"schedule": stored.model_dump_json()}, enabled=stored.enabled,
            # The fire task is small and runs on the default queue's workers.
            options={"queue": DEFAULT_QUEUE}, last_run_at=last_run_at, app=self.app)

    def _write(self, entry: Any, *, create: bool) -> bool:
        """Store an entry; with ``create``, only if no schedule has its name (atomic)."""
        from redbeat.decoder import RedBeatJSONEncoder

        definition = json.dumps({
            "name": entry.name, "task": entry.task, "args": entry.args,
            "kwargs": entry.kwargs, "options": entry.options, "schedule": entry.schedule,
            "enabled": entry.enabled,
        }, cls=RedBeatJSONEncoder)
        meta = json.dumps({"last_run_at": entry.last_run_at,
                           "total_run_count": entry.total_run_count}, cls=RedBeatJSONEncoder)
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(entry.key)
                if create and pipe.hexists(entry.key, "definition"):
                    return False
                pipe.multi()
                pipe.hset(entry.key, mapping={"definition": definition, "meta": meta})
                pipe.zadd(self.conf.schedule_key, {entry.key: entry.score})
                pipe.execute()
            except redis.WatchError:
                return False
        return True

    def create(self, spec: ScheduleSpec, *, owner: str, origin: Origin,
               may_submit: Callable[[str], bool] | None = None,
               roles: Sequence[str] | None = None) -> dict[str, Any]:
        """Add a schedule: ``InvalidMessage`` or ``Forbidden`` for its message, ``Conflict``
        when the owner already has one of that name. Its first firing is one period (or
        crontab point) away."""
        check_message(spec, self.parse, may_submit)
        now = self.app.now()
        stored = StoredSchedule(**spec.model_dump(), owner=owner, origin=origin,
                                created_at=now.isoformat(),
                                roles=list(roles) if roles is not None else None)
        if not self._write(self._new_entry(stored, now), create=True):
            raise Conflict(f"A schedule named {spec.name!r} already exists.")
        return self.get(stored.entry) or {}

    @property
    def _refusals_key(self) -> str:
        return refusals_key(self.conf.key_prefix)

    def set_enabled(self, name: str, enabled: bool) -> dict[str, Any] | None:
        """Pause or resume; a resumed schedule fires one period after resuming (what was
        missed while paused is not caught up)."""
        entry = self._entry(name)
        if entry is None:
            return None
        stored = StoredSchedule.model_validate_json(entry.kwargs["schedule"])
        if stored.enabled != enabled:
            stored.enabled = enabled
            last_run_at = self.app.now() if enabled else entry.last_run_at
            updated = self._new_entry(stored, last_run_at, entry.name)
            updated.total_run_count = entry.total_run_count
            self._write(updated, create=False)
        return self.get(name)

    def delete(self, name: str) -> bool:
        entry = self._entry(name)
        if entry is None:
            return False
        entry.delete()
        self.client.hdel(self._refusals_key, entry.name)
        return True

    def sync_file(self, specs: Sequence[ScheduleSpec]) -> SyncReport:
        """Make the file's schedules exist as written: create new ones, update changed ones
        (an unchanged one keeps its state, a run-time pause included), remove file schedules
        no longer in the file; schedules made at run time are never touched."""
        report = SyncReport()
        wanted = {spec.name: spec for spec in specs}
        for name in self._names():
            entry = self._entry(name)
            if entry is None:
                continue
            stored = StoredSchedule.model_validate_json(entry.kwargs["schedule"])
            if stored.origin != "file":
                if name in wanted:
                    report.kept_runtime.append(name)
                    log.warning("schedule %r of the file is ignored: a schedule of that name "
                                "was made at run time (%s)", name, stored.origin)
                    del wanted[name]
                continue
            spec = wanted.pop(name, None)
            if spec is None:
                entry.delete()
                report.removed.append(name)
            elif spec.spec() != stored.spec():
                updated = StoredSchedule(**spec.model_dump(), owner=FILE_OWNER, origin="file",
                                         created_at=stored.created_at)
                new = self._new_entry(updated, entry.last_run_at or self.app.now())
                new.total_run_count = entry.total_run_count
                self._write(new, create=False)
                report.updated.append(name)
        for name, spec in wanted.items():
            try:
                self.create(spec, owner=FILE_OWNER, origin="file")
            except Conflict:  # made at run time a moment ago: that one stays
                report.kept_runtime.append(name)
                continue
            report.created.append(name)
        return report


def fire(stored: StoredSchedule, scheduled_at: datetime,
         submit: Callable[..., Sequence[Any]], sender: Any = None) -> Any:
    """Submit one firing through the ordinary submit path (``Submitter.submit_raw``), as its
    creator (``sender``: its namespace and grants)."""
    [result] = submit([stored.envelope(scheduled_at)], owner=stored.owner, channel=CHANNEL,
                      sender=sender)
    return result


def outcome_of(result: Any) -> str:
    """``accepted``, ``duplicate`` (this firing was already submitted), ``unavailable`` or
    ``rejected`` (the message no longer validates)."""
    if not isinstance(result, Problem):
        return "accepted"
    if isinstance(result, Conflict):
        return "duplicate"
    if isinstance(result, (InvalidMessage, Forbidden)):
        return "rejected"
    return "unavailable"
