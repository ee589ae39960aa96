"""Schedules kept in Redis as celery-redbeat entries (one hash each, plus a sorted set of due
times), so the beat that fires them reads every change at its next loop, and the gateway and
the CLI manage them without talking to beat."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import redis

from integration.messages.problems import Conflict
from integration.messages.routing import DEFAULT_QUEUE
from integration.settings import Settings
from integration.store.redis_client import redbeat_sentinel_options

if TYPE_CHECKING:
    from celery import Celery
from integration.schedules.file import Parse, check_message
from integration.schedules.firing import FIRE_TASK
from integration.schedules.spec import (
    ENTRY_PATTERN,
    FILE_OWNER,
    Origin,
    ScheduleSpec,
    StoredSchedule,
    scheduled_time,
)

log = logging.getLogger(__name__)


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
    sentinel = redbeat_sentinel_options(settings) if settings.sentinels else {}
    return {"socket_timeout": 10, "socket_connect_timeout": 5,
            # Ride out a short Redis outage; a longer one loses the lock and beat exits
            # (its supervisor restarts it, and it waits for the lock again).
            "retry_period": settings.beat_lock_timeout_seconds, **sentinel}


def redbeat_url(settings: Settings) -> str:
    """redbeat's Redis URL: the store's, or ``redis-sentinel://`` (with the sentinels in
    ``redbeat_options``) to follow the master across a failover."""
    return "redis-sentinel://" if settings.sentinels else settings.redis_url


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
        app.conf.update(redbeat_redis_url=redbeat_url(settings),
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
