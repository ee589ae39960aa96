"""Celery beat's scheduler: redbeat (schedules in Redis, one active beat by lock) plus the
schedule file, each firing's scheduled time, and what happens to missed firings.

``celeryconfig.beat_scheduler`` names it, so ``celery -A tasks beat`` needs no option.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType
from typing import Any

import redis
from redbeat import RedBeatScheduler

from integration.app import build_submitter, get_settings, load_schedules, ping_store
from integration.logs import get_logger
from integration.mistakes import explain
from integration.schedules.firing import FIRE_TASK
from integration.schedules.spec import StoredSchedule, period_after, scheduled_time
from integration.schedules.store import Schedules
from integration.settings import ConfigurationError

log = get_logger("integration.beat")


class Scheduler(RedBeatScheduler):
    """redbeat's scheduler, firing ``integration.schedule.fire`` with the scheduled time."""

    #: Seconds between tries while Redis cannot be reached.
    unreachable_retry_seconds = 1.0
    _unreachable = False

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """A lost Redis is one line, and beat waits for it to come back, rather than a
        traceback and an exit; a lock lost meanwhile still stops beat (another may lead)."""
        try:
            interval = float(super().tick(*args, **kwargs))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not self._unreachable:
                log.warning("Redis unreachable; beat fires nothing until it answers "
                            "(check that it runs and INTEGRATION_REDIS_URL)",
                            error=" ".join(str(exc).split()))
            self._unreachable = True
            return self.unreachable_retry_seconds
        if self._unreachable:
            log.info("Redis reachable again; beat goes on")
            self._unreachable = False
        return interval

    def install_default_entries(self, data: Any) -> None:
        """None: results live in the status store, so Celery's backend cleanup has no work."""

    def setup_schedule(self) -> None:
        try:
            # Redis answers at start, or beat stops at once with the reason (redbeat would
            # retry for INTEGRATION_BEAT_LOCK_TIMEOUT_SECONDS, then exit with a traceback);
            # a later outage is ridden out as before.
            ping_store(get_settings())
            super().setup_schedule()
        except Exception as exc:
            # The supervisor or compose starts beat again.
            line = explain(exc, get_settings())
            if line is None:
                raise
            log.error(f"beat stops: {line}")
            raise SystemExit(1) from None
        self.sync_schedule_file()

    def sync_schedule_file(self) -> None:
        """Bring the file's schedules into Redis; an invalid file stops beat with the reason."""
        settings = get_settings()
        parse = build_submitter(settings, origin="beat").parse
        try:
            specs = load_schedules(settings.schedule_file)
        except ConfigurationError as exc:
            # Stop beat with the reason alone: a traceback would bury it.
            log.error("schedule file invalid; beat stops", error=str(exc))
            raise SystemExit(1) from None
        report = Schedules(self.app, parse).sync_file(specs)
        log.info("schedule file synced", file=settings.schedule_file or "(default)",
                 created=report.created, updated=report.updated, removed=report.removed,
                 kept_runtime=report.kept_runtime)

    def maybe_due(self, entry: Any, **kwargs: Any) -> Any:
        if entry.task == FIRE_TASK:
            is_due, next_time_to_run = entry.is_due()
            if is_due and self._skip_missed(entry):
                return next_time_to_run
        return super().maybe_due(entry, **kwargs)

    def _skip_missed(self, entry: Any) -> bool:
        """A missed firing (late by more than one period or the grace) of a ``skip``
        schedule is dropped: the entry is moved on to its next time without firing."""
        settings = get_settings()
        stored = StoredSchedule.model_validate_json(entry.kwargs["schedule"])
        if (stored.catch_up or settings.beat_catch_up) != "skip" or entry.last_run_at is None:
            return False
        due = scheduled_time(entry.schedule, entry.last_run_at)
        late = self.app.now() - due
        allowed = min(timedelta(seconds=settings.beat_missed_after_seconds),
                      period_after(entry.schedule, due))
        if late <= allowed:
            return False
        log.warning("missed firing skipped", schedule=entry.name, due=due.isoformat(),
                    late_seconds=round(late.total_seconds(), 3))
        entry.reschedule(self.app.now())
        return True

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True,
                    **kwargs: Any) -> Any:
        if entry.task != FIRE_TASK:
            return super().apply_async(entry, producer, advance, **kwargs)
        # Moving the entry on and sending its firing are one step for a stop signal: one that
        # arrived in between would leave the firing recorded as sent and never sent (its
        # time is past, so no catch-up brings it back). It takes effect once the send is done.
        with _stop_signals_held():
            # Named before the entry moves on: the time it was due, not the time it was sent.
            last_run_at = entry.last_run_at or self.app.now()
            scheduled_at = scheduled_time(entry.schedule, last_run_at)
            entry = self.reserve(entry) if advance else entry
            entry.kwargs = {**entry.kwargs, "scheduled_at": scheduled_at.isoformat()}
            return super().apply_async(entry, producer, advance=False, **kwargs)


#: What stops beat (Celery turns them into SystemExit in the main thread).
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Hold SIGTERM and SIGINT back until the block is done; one that arrived meanwhile
    takes effect then.

    The handlers are swapped rather than the signals masked: the kernel hands a signal
    the main thread blocks to any other thread, and Python then runs the handler in the
    main thread all the same. Python handlers run only in the main thread, so elsewhere
    there is nothing to hold back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        if signum not in arrived:
            arrived.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in _STOP_SIGNALS
                if signal.getsignal(signum) is not None}  # None: set outside Python, left be
    try:
        yield
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)
        for signum in arrived:
            signal.raise_signal(signum)
