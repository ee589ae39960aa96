"""Scheduled messages: real ``celery -A tasks beat`` processes (redbeat) and the session worker.

Beat runs with a 1 s loop and a 5 s lock (the settings the README documents as the bounds for
a run-time change and a standby takeover); schedules fire every second.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from integration.schedules.firing import FIRE_TASK
from integration.schedules.spec import StoredSchedule
from integration.settings import Settings
from integration.store.records import store_from_settings
from tests.conftest import ROOT, WorkerProcess, bearer, mine, purge_keys, wait_for

LOOP_SECONDS = 1.0
LOCK_SECONDS = 5.0
BEAT_ENV = {
    "INTEGRATION_BEAT_MAX_LOOP_INTERVAL_SECONDS": str(LOOP_SECONDS),
    "INTEGRATION_BEAT_LOCK_TIMEOUT_SECONDS": str(LOCK_SECONDS),
}
#: A run-time change takes effect within one beat loop; a firing then takes one period and
#: the worker's round trip.
TAKES_EFFECT = LOOP_SECONDS + 1.0 + 3.0


class BeatProcess:
    """A real ``celery -A tasks beat`` child process with the test loop and lock."""

    def __init__(self, log_path: Path, schedule_file: Path, **env: str) -> None:
        self.log_path = log_path
        self.log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "beat", "--loglevel", "INFO"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **BEAT_ENV, "INTEGRATION_SCHEDULE_FILE": str(schedule_file),
                 "INTEGRATION_METRICS_PORT": "0", **env})

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def active(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError("beat exited:\n" + self.output()[-3000:])
        return "beat: Acquired lock" in self.output()

    def wait_active(self, timeout: float = 30) -> None:
        wait_for(self.active, timeout=timeout, message=f"beat active (log {self.log_path})")

    def sent(self, name: str) -> int:
        return self.output().count(f"Sending due task {name} ")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture
def clean_schedules(redis_client: redis.Redis) -> Iterator[None]:
    """No schedule, due time or beat lock of another test (or of an API test) is left."""
    purge_keys(redis_client, "integration:beat:*")
    yield
    purge_keys(redis_client, "integration:beat:*")


@pytest.fixture
def beats(tmp_path: Path, clean_schedules: None) -> Iterator[list[BeatProcess]]:
    """Beat processes a test starts; all are stopped at its end."""
    started: list[BeatProcess] = []
    yield started
    for beat in started:
        beat.stop()


def start_beat(beats: list[BeatProcess], tmp_path: Path, schedule_file: Path,
               **env: str) -> BeatProcess:
    beat = BeatProcess(tmp_path / f"beat-{len(beats)}.log", schedule_file, **env)
    beats.append(beat)
    return beat


def schedule_file(tmp_path: Path, *entries: dict[str, Any]) -> Path:
    path = tmp_path / "schedules.yaml"
    path.write_text(json.dumps({"schedules": list(entries)}))  # JSON is YAML
    return path


def fired(settings: Settings, name: str, owner: str = "beat") -> list[dict[str, Any]]:
    """The status records of a schedule's firings, oldest scheduled time first."""
    items, _ = store_from_settings(settings).list(owner=owner, limit=1000)
    found = [item for item in items if item["id"].startswith(f"beat.{name}.")]
    return sorted(found, key=lambda item: item["envelope"]["time"])


def scheduled_at(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["envelope"]["time"]).timestamp()


def scrape(worker: WorkerProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics",
                                timeout=5) as response:
        return response.read().decode()


def received(worker: WorkerProcess, outcome: str) -> float:
    pattern = (r'integration_messages_received_total\{channel="beat",outcome="'
               + outcome + r'",type="event"\} ([0-9.e+]+)')
    match = re.search(pattern, scrape(worker))
    return float(match.group(1)) if match else 0.0



def test_a_file_schedule_fires_ordinary_messages(
    worker: WorkerProcess, beats: list[BeatProcess], tmp_path: Path, settings: Settings,
    client: FlaskClient, auth: dict[str, str],
) -> None:
    """Each firing is a message with channel beat, the configured type and data, processed to
    succeeded, and counted as received on the beat channel."""
    before = received(worker, "accepted")
    path = schedule_file(tmp_path, {"name": "tick", "every": 1, "type": "event",
                                    "data": {"kind": "tick"}, "subject": "clock"})
    start_beat(beats, tmp_path, path).wait_active()

    records = wait_for(lambda: len(r := fired(settings, "tick")) >= 2 and r, timeout=15,
                       message="two firings")
    for record in records[:2]:
        detail = client.get(f"/api/v1/messages/{record['id']}", headers=auth).get_json()
        assert detail["channel"] == "beat"
        assert detail["owner"] == "beat"
        assert detail["type"] == "event"
        envelope = record["envelope"]
        assert envelope["data"] == {"kind": "tick"}
        assert envelope["source"] == "/integration/beat/tick"
        assert envelope["subject"] == "clock"
        wait_for(lambda r=record: client.get(f"/api/v1/messages/{r['id']}", headers=auth)
                 .get_json()["status"] == "succeeded", message="firing processed")
    times = [scheduled_at(r) for r in records]
    assert all(0.9 <= b - a <= 1.5 for a, b in zip(times, times[1:], strict=False)), times
    wait_for(lambda: received(worker, "accepted") >= before + 2, timeout=10,
             message="beat channel counted")
    listed = client.get("/api/v1/schedules/tick", headers=auth).get_json()
    assert listed["origin"] == "file" and listed["fired_count"] >= 2


def test_a_runtime_schedule_fires_pauses_resumes_and_stops(
    worker: WorkerProcess, beats: list[BeatProcess], tmp_path: Path, settings: Settings,
    client: FlaskClient,
) -> None:
    """Created through the API it fires within one loop and period; paused it stops, resumed
    it fires again, deleted it stops for good; no beat restart is needed."""
    headers = bearer("scheduler-1", "admin")
    beat = start_beat(beats, tmp_path, schedule_file(tmp_path))
    beat.wait_active()
    created_at = time.monotonic()
    response = client.post("/api/v1/schedules", headers=headers, json={
        "name": "pulse", "every": "1s", "type": "event", "data": {"kind": "pulse"}})
    assert response.status_code == 201, response.get_json()
    assert response.headers["Location"].endswith("/api/v1/schedules/pulse")
    assert response.get_json()["owner"] == "scheduler-1"

    count = lambda: len(fired(settings, "pulse", owner="scheduler-1"))  # noqa: E731
    wait_for(lambda: count() >= 1, timeout=TAKES_EFFECT, message="first firing")
    assert time.monotonic() - created_at <= TAKES_EFFECT

    entry = response.get_json()["id"]  # the name in its creator's namespace

    def stops_firing() -> None:
        time.sleep(LOOP_SECONDS + 0.5)  # the change reaches beat within one loop
        sent = beat.sent(entry)
        time.sleep(2.5)
        assert beat.sent(entry) == sent, "beat still fires it"
        wait_for(lambda: count() == sent, timeout=10, message="what was sent is processed")

    assert client.post("/api/v1/schedules/pulse/pause", headers=headers).get_json()[
        "enabled"] is False
    stops_firing()

    resumed = client.post("/api/v1/schedules/pulse/resume", headers=headers).get_json()
    assert resumed["enabled"] is True and resumed["next_run_at"]
    paused = count()
    wait_for(lambda: count() >= paused + 2, timeout=TAKES_EFFECT + 1, message="fires again")

    assert client.delete("/api/v1/schedules/pulse", headers=headers).status_code == 204
    stops_firing()
    assert client.get("/api/v1/schedules/pulse", headers=headers).status_code == 404


def test_two_beats_at_once_fire_each_time_once(
    worker: WorkerProcess, beats: list[BeatProcess], tmp_path: Path, settings: Settings,
) -> None:
    """With two beats running, only the lock holder fires: as many messages as scheduled
    times, and no firing is submitted twice."""
    duplicates = received(worker, "duplicate")
    path = schedule_file(tmp_path, {"name": "pair", "every": 1, "type": "event"})
    first = start_beat(beats, tmp_path, path)
    second = start_beat(beats, tmp_path, path)
    wait_for(lambda: first.active() or second.active(), timeout=30, message="a beat active")
    wait_for(lambda: first.sent("pair") + second.sent("pair") >= 4, timeout=15,
             message="four firings sent")
    assert [first.active(), second.active()].count(True) == 1
    # Compared while the beats still run: beat logs "Sending due task" before it publishes,
    # so a beat stopped right after that line may never have sent the firing it logged.
    # Firings keep coming meanwhile; between two of them, every one sent is a message.
    records = wait_for(lambda: len(r := fired(settings, "pair"))
                       == first.sent("pair") + second.sent("pair") and r, timeout=20,
                       message="every firing sent so far to be a message")
    for beat in beats:
        beat.stop()
    assert len(records) >= 4
    assert len({scheduled_at(r) for r in records}) == len(records)
    assert received(worker, "duplicate") == duplicates


def test_a_repeated_firing_is_a_conflict_not_a_second_message(
    worker: WorkerProcess, clean_schedules: None, settings: Settings,
) -> None:
    """The same firing sent twice (a second beat, a retry) makes one message; the second
    submit is refused as a duplicate."""
    from celery import Celery

    duplicates = received(worker, "duplicate")
    stored = StoredSchedule(name="twice", every=60.0, type="event", data={"n": 1},
                            owner="beat", origin="file", created_at="2025-01-01T00:00:00Z")
    app = Celery("test-fire")
    app.config_from_object("celeryconfig")
    for _ in range(2):
        app.send_task(FIRE_TASK, kwargs={"schedule": stored.model_dump_json(),
                                         "scheduled_at": "2025-01-01T00:01:00+00:00"},
                      queue="integration.default")
    wait_for(lambda: received(worker, "duplicate") == duplicates + 1, timeout=15,
             message="the second firing refused as a duplicate")
    records = fired(settings, "twice")
    assert [r["id"] for r in records] == [mine("beat.twice.20250101T000100.000Z", "beat")]


def test_no_client_can_take_a_firing_id_first(
    worker: WorkerProcess, clean_schedules: None, settings: Settings, client: FlaskClient,
    auth: dict[str, str],
) -> None:
    """A firing's id is predictable; submitted by a client first, it would make the firing a
    duplicate. Every client path refuses the id (422 ``reserved_id``), and the firing runs."""
    from celery import Celery

    taken = "beat.early.20250101T000100.000Z"
    message = {"id": taken, "type": "event", "source": "t", "data": {"n": 1}}
    single = client.post("/api/v1/messages", headers=auth, json=message)
    assert single.status_code == 422, single.get_json()
    assert single.get_json()["errors"][0]["type"] == "reserved_id"
    batch = client.post("/api/v1/messages", headers=auth, json=[message])
    assert batch.get_json()["results"][0]["status"] == 422, batch.get_json()
    cloudevent = client.post("/api/v1/messages", headers={
        **auth, "Content-Type": "application/cloudevents+json"},
        data=json.dumps({**message, "specversion": "1.0"}))
    assert cloudevent.status_code == 422, cloudevent.get_json()
    store = store_from_settings(settings)
    assert store.get(taken) is None

    stored = StoredSchedule(name="early", every=60.0, type="event", data={"n": 1},
                            owner="beat", origin="file", created_at="2025-01-01T00:00:00Z")
    app = Celery("test-fire")
    app.config_from_object("celeryconfig")
    app.send_task(FIRE_TASK, kwargs={"schedule": stored.model_dump_json(),
                                     "scheduled_at": "2025-01-01T00:01:00+00:00"},
                  queue="integration.default")
    record = wait_for(lambda: (r := store.get(mine(taken, "beat"))) and
                      r["status"] == "succeeded" and r,
                      timeout=15, message="the firing processed")
    assert record["channel"] == "beat"


def test_a_standby_beat_takes_over_after_sigterm(
    worker: WorkerProcess, beats: list[BeatProcess], tmp_path: Path, settings: Settings,
) -> None:
    """SIGTERM makes the active beat release its lock: the standby fires within the lock
    timeout, and the schedule goes on."""
    path = schedule_file(tmp_path, {"name": "relay", "every": 1, "type": "event"})
    first = start_beat(beats, tmp_path, path)
    first.wait_active()
    second = start_beat(beats, tmp_path, path)
    wait_for(lambda: "schedule file synced" in second.output(), timeout=30,
             message="standby started")
    time.sleep(2)
    assert not second.active()
    stopped = time.monotonic()
    first.stop(signal.SIGTERM)
    assert "beat: Releasing lock" in first.output()
    second.wait_active(timeout=LOCK_SECONDS)
    assert time.monotonic() - stopped <= LOCK_SECONDS
    handed_over = time.time()
    wait_for(lambda: any(scheduled_at(r) > handed_over for r in fired(settings, "relay")),
             timeout=TAKES_EFFECT, message="the standby fires")


def test_firings_missed_while_beat_was_down(
    worker: WorkerProcess, beats: list[BeatProcess], tmp_path: Path, settings: Settings,
) -> None:
    """Beat stopped across several periods: on restart a schedule fires once for all of them
    (catch_up once) or not at all (skip), then on time again."""
    path = schedule_file(tmp_path, *({"name": f"missed-{mode}", "every": 1, "type": "event",
                                      "catch_up": mode} for mode in ("once", "skip")))
    beat = start_beat(beats, tmp_path, path)
    beat.wait_active()
    wait_for(lambda: fired(settings, "missed-once") and fired(settings, "missed-skip"),
             timeout=TAKES_EFFECT, message="firings")
    beat.stop()
    names = ("missed-once", "missed-skip")
    wait_for(lambda: all(len(fired(settings, n)) == beat.sent(n) for n in names),
             timeout=10, message="what was sent before the stop is processed")
    seen = {r["id"] for name in names for r in fired(settings, name)}
    time.sleep(4)  # four periods without beat

    restarted = time.time()
    start_beat(beats, tmp_path, path).wait_active()
    for mode, expected in (("once", 1), ("skip", 0)):
        name = f"missed-{mode}"
        wait_for(lambda n=name: sum(scheduled_at(r) > restarted
                                    for r in fired(settings, n)) >= 2,
                 timeout=TAKES_EFFECT + 2, message=f"{name} on time again")
        caught_up = [r for r in fired(settings, name)
                     if r["id"] not in seen and scheduled_at(r) < restarted]
        assert len(caught_up) == expected, (mode, caught_up)


def test_an_invalid_schedule_file_stops_beat_with_the_reason(
    beats: list[BeatProcess], tmp_path: Path,
) -> None:
    """Beat refuses to start on a bad file, naming the file, the entry and the field."""
    path = schedule_file(tmp_path, {"name": "broken", "every": 1, "type": "metric",
                                    "data": {"name": "cpu"}})
    beat = start_beat(beats, tmp_path, path)
    assert beat.process.wait(timeout=30) != 0
    output = beat.output()
    assert str(path) in output
    assert "schedules[0] (broken): data.value: Field required" in output
    assert "Acquired lock" not in output
