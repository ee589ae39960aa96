"""Message types for fault tests, loaded by workers through INTEGRATION_TYPE_MODULES.

Every effect is written to a ledger under a unique constraint (a Redis set), so a test can
tell an effect that happened twice.
"""

from __future__ import annotations

import os
import time
from functools import cache
from pathlib import Path
from typing import Any, Literal

import redis
from pydantic import BaseModel

from integration.app import get_settings
from integration.messages.envelope import Envelope
from integration.messages.registry import MessageType
from integration.messages.retry import DownstreamError, PermanentError, RetryPolicy, TransientError

LEDGER = "tests:ledger"
DUPLICATES = "tests:duplicates"


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url)


def record_effect(key: str) -> int:
    """Write the effect once; a second write of the same key is counted as a duplicate."""
    client = _redis()
    if not client.sadd(LEDGER, key):
        client.rpush(DUPLICATES, key)
    return int(client.scard(LEDGER))


class Flaky(BaseModel):
    key: str
    fail_times: int = 0
    kind: Literal["transient", "permanent"] = "transient"


def handle_flaky(payload: Flaky, envelope: Envelope) -> dict[str, Any]:
    """Fails ``fail_times`` times, then has its effect."""
    attempt = int(_redis().incr(f"tests:attempts:{payload.key}"))
    if attempt <= payload.fail_times:
        error = TransientError if payload.kind == "transient" else PermanentError
        raise error(f"failure {attempt} of {payload.fail_times}")
    record_effect(payload.key)
    return {"attempt": attempt}


class Slow(BaseModel):
    key: str
    seconds: float


def handle_slow(payload: Slow, envelope: Envelope) -> dict[str, Any]:
    """Announces it started, sleeps, then has its effect."""
    _redis().rpush(f"tests:started:{payload.key}", f"{envelope.id} {os.getpid()}")
    time.sleep(payload.seconds)
    record_effect(payload.key)
    return {"slept": payload.seconds}


class Downstream(BaseModel):
    target: str
    key: str


def handle_downstream(payload: Downstream, envelope: Envelope) -> dict[str, Any]:
    """Calls a target that answers 503 while ``tests:down:<target>`` exists."""
    client = _redis()
    client.rpush(f"tests:calls:{payload.target}",
                 f"{time.time():.3f} {int(bool(client.exists(f'tests:down:{payload.target}')))}")
    if client.exists(f"tests:down:{payload.target}"):
        time.sleep(0.05)
        raise DownstreamError(503, f"{payload.target} is down")
    record_effect(payload.key)
    return {"target": payload.target}


class Action(BaseModel):
    action: str
    target: str
    key: str


def handle_action(payload: Action, envelope: Envelope) -> dict[str, Any]:
    record_effect(payload.key)
    return {"done": payload.action}


class Crash(BaseModel):
    key: str


def handle_crash(payload: Crash, envelope: Envelope) -> dict[str, Any]:
    """Kills the process running it, every time: a message that keeps killing workers."""
    _redis().incr(f"tests:crashes:{payload.key}")
    os.kill(os.getpid(), 9)
    return {}


class Buggy(BaseModel):
    key: str


def handle_buggy(payload: Buggy, envelope: Envelope) -> dict[str, Any]:
    """Reads a file that is not there, every time: an error whose text holds an absolute
    path (as a bug in a user's handler would), raised from deep in the standard library."""
    settings_file = Path(__file__).resolve().with_name(f"missing-{payload.key}.json")
    return {"settings": settings_file.read_text()}


FAST_RETRIES = RetryPolicy(max_attempts=3, base_delay_seconds=0.2, max_delay_seconds=1.0)

TYPES = [
    MessageType("test.flaky", Flaky, handle_flaky, "Fails N times.", retry=FAST_RETRIES),
    MessageType("test.slow", Slow, handle_slow, "Sleeps.", retry=FAST_RETRIES),
    MessageType("test.downstream", Downstream, handle_downstream, "Calls a target.",
                retry=RetryPolicy(max_attempts=8, base_delay_seconds=0.2, max_delay_seconds=1),
                target=lambda p: f"test:{p.target}"),
    MessageType("test.crash", Crash, handle_crash, "Kills its worker.", retry=FAST_RETRIES),
    MessageType("test.crash-once", Crash, handle_crash, "Kills its worker; one attempt.",
                retry=RetryPolicy(max_attempts=1)),
    MessageType("test.patient", Flaky, handle_flaky, "Retries after a long wait.",
                retry=RetryPolicy(max_attempts=2, base_delay_seconds=12, max_delay_seconds=12,
                                  jitter=False)),
    MessageType("test.produce", Flaky, handle_flaky, "Produces events for consumer tests."),
    MessageType("test.inline", Flaky, handle_flaky, "Produces events for inline consumers."),
    MessageType("test.buggy", Buggy, handle_buggy, "Fails on a missing file.",
                retry=RetryPolicy(max_attempts=2, base_delay_seconds=0.2, max_delay_seconds=0.2,
                                  jitter=False)),
    MessageType("test.action", Action, handle_action, "A guarded action.",
                target=lambda p: f"test:{p.target}", action_key=lambda p: p.action),
]
