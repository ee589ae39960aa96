"""Guards around a handler's effect on a downstream target, shared by every worker via Redis.

- **Circuit breaker** per target (pybreaker with its Redis storage), plus what pybreaker
  lacks across processes: at most one trial call in flight while half-open, over all
  workers (a Redis lock). Only transient errors count; business errors do not trip it.
- **Rate limit** per action target (``limits``' moving window): over it, the action waits.
- **Loop detection**: the same action on the same target more than N times in a window is
  held for an operator instead of executed (remediation storms).

A refused admission spends no attempt: the message is ``deferred`` (or ``held``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import pybreaker
import redis
from limits import RateLimitItem, parse
from limits.storage import Storage
from limits.strategies import MovingWindowRateLimiter

from integration.messages.retry import classify


class Deferred(Exception):
    """Not now: try again in ``retry_in`` seconds, without spending an attempt."""

    def __init__(self, reason: str, retry_in: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_in = max(retry_in, 0.1)


class Held(Exception):
    """Stopped for an operator: the same action keeps repeating on the same target."""


@dataclass(frozen=True)
class GuardSettings:
    fail_max: int = 5
    reset_timeout: float = 30.0
    trial_timeout: float = 60.0
    action_rate_limit: str | None = "30/minute"
    loop_limit: int = 5
    loop_window: float = 600.0


class SharedBreaker:
    """One downstream target's breaker, its state in Redis under its own namespace."""

    def __init__(self, name: str, client: redis.Redis, prefix: str,
                 settings: GuardSettings) -> None:
        self.name = name
        self.client = client
        self.settings = settings
        self.namespace = f"{prefix}:breaker:{name}"
        # Kept here to read its public state (opened_at, counter): the breaker keeps it private.
        self.storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client,
                                                     namespace=self.namespace)
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=settings.fail_max, reset_timeout=settings.reset_timeout,
            exclude=[lambda error: classify(error) == "permanent"],
            state_storage=self.storage, name=name, throw_new_error_on_trip=False,
        )
        client.sadd(f"{prefix}:breakers", name)

    def _closes_in(self) -> float:
        opened = self.storage.opened_at
        if opened is None:
            return 0.0
        return max(0.0, (opened.timestamp() + self.settings.reset_timeout) - time.time())

    @contextmanager
    def admitted(self) -> Iterator[Callable[[Callable[[], Any]], Any]]:
        """Admit one call, or raise ``Deferred`` while open (or while another trial runs)."""
        state = self.breaker.current_state
        trial_lock = None
        if state == pybreaker.STATE_OPEN and self._closes_in() > 0:
            raise Deferred(f"breaker {self.name} is open", self._closes_in())
        if state != pybreaker.STATE_CLOSED:
            trial_lock = f"{self.namespace}:trial"
            token = uuid.uuid4().hex
            if not self.client.set(trial_lock, token, nx=True,
                                   px=int(self.settings.trial_timeout * 1000)):
                raise Deferred(f"breaker {self.name} is half-open with a trial in flight",
                               max(1.0, self.settings.reset_timeout / 10))
        try:
            yield self.breaker.call
        finally:
            if trial_lock and self.client.get(trial_lock) == token.encode():
                self.client.delete(trial_lock)

    def close(self) -> None:
        """Close the breaker now (an operator knows the target is back), with no failures
        counted and no trial in flight."""
        self.breaker.close()
        self.client.delete(f"{self.namespace}:trial")

    def describe(self) -> dict[str, Any]:
        storage = self.storage
        opened = storage.opened_at
        state = self.breaker.current_state
        return {
            "name": self.name,
            "state": state,
            "failures": storage.counter,
            "opened_at": opened.astimezone(UTC).isoformat() if opened else None,
            "closes_at": (datetime.fromtimestamp(opened.timestamp() + self.settings.reset_timeout,
                                                 UTC).isoformat()
                          if opened and state != pybreaker.STATE_CLOSED else None),
        }


class Guards:
    """Breakers, rate limits and loop detection for every target, from one Redis client."""

    def __init__(self, client: redis.Redis, prefix: str, settings: GuardSettings,
                 rate_storage: Storage) -> None:
        self.client = client
        self.prefix = prefix
        self.settings = settings
        self._breakers: dict[str, SharedBreaker] = {}
        self._limiter = MovingWindowRateLimiter(rate_storage)
        self._rate: RateLimitItem | None = (parse(settings.action_rate_limit)
                                            if settings.action_rate_limit else None)

    def breaker(self, target: str) -> SharedBreaker:
        if target not in self._breakers:
            self._breakers[target] = SharedBreaker(target, self.client, self.prefix,
                                                   self.settings)
        return self._breakers[target]

    def check_storm(self, action: str, target: str, *, override: bool = False) -> None:
        """Loop detection, then the target's rate limit; raises ``Held`` or ``Deferred``."""
        key = f"{self.prefix}:loop:{target}:{action}"
        now = time.time()
        if not override:
            self.client.zremrangebyscore(key, "-inf", now - self.settings.loop_window)
            if cast(int, self.client.zcard(key)) >= self.settings.loop_limit:
                raise Held(f"{action!r} ran {self.settings.loop_limit} times on {target!r} "
                           f"within {self.settings.loop_window:.0f} s")
        if self._rate is not None and not self._limiter.hit(self._rate, self.prefix, target):
            reset = self._limiter.get_window_stats(self._rate, self.prefix, target).reset_time
            raise Deferred(f"rate limit {self._rate} of {target!r} reached", reset - now)
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(key, {uuid.uuid4().hex: now})
        pipe.expire(key, int(self.settings.loop_window) + 1)
        pipe.execute()

    def reset_breaker(self, target: str) -> dict[str, Any] | None:
        """Close ``target``'s breaker; None when no breaker of that name exists."""
        if not self.client.sismember(f"{self.prefix}:breakers", target):
            return None
        breaker = self.breaker(target)
        breaker.close()
        return breaker.describe()

    def describe_breakers(self) -> list[dict[str, Any]]:
        names = sorted(n.decode() for n in cast(set[bytes],
                                                self.client.smembers(f"{self.prefix}:breakers")))
        return [self.breaker(name).describe() for name in names]
