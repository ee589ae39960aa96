"""Durations checked at start-up: the recovery bound (how long after the last fault is
repaired every accepted message is final or held by something alive), and records and keys
that outlive every retry and redelivery."""

from __future__ import annotations

from dataclasses import dataclass

from integration.messages.registry import Registry
from integration.messages.retry import default_policy, idempotency_ttl
from integration.settings import ConfigurationError, Settings

#: A worker's heartbeat lives this many intervals: one late beat does not make it dead.
HEARTBEAT_LIVES = 3
#: The reconciler's election lease lives this many passes: a dead leader is replaced after it.
LEADER_LIVES = 3
#: A claim is renewed this many times per lease while its handler runs.
RENEWALS_PER_LEASE = 3


def heartbeat_ttl(settings: Settings) -> float:
    return HEARTBEAT_LIVES * settings.worker_heartbeat_seconds


def leader_lease(settings: Settings) -> float:
    return LEADER_LIVES * settings.reconcile_interval_seconds


@dataclass(frozen=True)
class Path:
    """One way a message comes back after a fault, with the seconds each step takes."""

    name: str
    steps: tuple[tuple[str, float], ...]

    @property
    def seconds(self) -> float:
        return sum(seconds for _, seconds in self.steps)


@dataclass(frozen=True)
class Bound:
    paths: tuple[Path, ...]

    @property
    def seconds(self) -> float:
        return max(path.seconds for path in self.paths)

    def explain(self) -> str:
        return "; ".join(
            f"{path.name}: {path.seconds:g} s (" + " + ".join(
                f"{what} {seconds:g}" for what, seconds in path.steps) + ")"
            for path in self.paths)


def recovery_bound(settings: Settings) -> Bound:
    """The slowest way back, from the moment the last fault is repaired.

    - A message nothing holds (lost between kombu's pop and its unacked write, a rejected
      publish, a lost worker's unacked entry): once its record is stale, no live heartbeat
      lists it and a reconciler is elected (whichever is last), two passes see it unheld
      and it goes back to the due set, whose loop enqueues it.
    - A killed pool process: its message is requeued at once, and the next delivery waits
      for the dead delivery's claim to lapse (it is no longer renewed).
    """
    interval = settings.reconcile_interval_seconds
    poll = settings.retry_poll_interval_seconds
    stranded = Path("a message nothing holds", (
        ("stale, heartbeat lapsed, reconciler elected",
         max(settings.reconcile_after_seconds, heartbeat_ttl(settings),
             leader_lease(settings))),
        ("two reconciler passes", 2 * interval),
        ("the due loop", poll),
    ))
    killed = Path("a killed pool process", (
        ("the dead claim lapses", float(settings.claim_lease_seconds)),
        ("the held-back wait", 1.0),
        ("the due loop", poll),
    ))
    return Bound((stranded, killed))


def check_recovery_bound(settings: Settings) -> Bound:
    """The bound, or ``ConfigurationError`` when it exceeds ``RECOVERY_BOUND_SECONDS``."""
    bound = recovery_bound(settings)
    if bound.seconds > settings.recovery_bound_seconds:
        raise ConfigurationError(
            f"these settings recover in up to {bound.seconds:g} s, more than "
            f"INTEGRATION_RECOVERY_BOUND_SECONDS ({settings.recovery_bound_seconds:g}): "
            f"{bound.explain()}. Lower INTEGRATION_RECONCILE_AFTER_SECONDS, "
            "INTEGRATION_RECONCILE_INTERVAL_SECONDS, INTEGRATION_WORKER_HEARTBEAT_SECONDS or "
            "INTEGRATION_CLAIM_LEASE_SECONDS, or raise the bound.")
    return bound


def check_durations(settings: Settings, registry: Registry) -> None:
    """Refuse a configuration whose duplicate guards expire before a message can be retried.

    The status record (which says a message finished) and the idempotency key must outlive
    the longest retry schedule, a redelivery by visibility timeout, and a claim lease.
    """
    policies = [default_policy(settings), *(t.retry for t in registry if t.retry)]
    longest = max(p.longest_schedule() for p in policies)
    needed = longest + settings.visibility_timeout_seconds + settings.claim_lease_seconds
    if settings.claim_lease_seconds >= settings.visibility_timeout_seconds:
        raise ConfigurationError(
            f"INTEGRATION_CLAIM_LEASE_SECONDS ({settings.claim_lease_seconds}) must be shorter "
            f"than INTEGRATION_VISIBILITY_TIMEOUT_SECONDS ({settings.visibility_timeout_seconds}).")
    guards = {"INTEGRATION_STATUS_TTL_SECONDS": settings.status_ttl_seconds,
              "INTEGRATION_IDEMPOTENCY_TTL_SECONDS": idempotency_ttl(settings)}
    for name, ttl in guards.items():
        if ttl < needed:
            raise ConfigurationError(
                f"{name} ({ttl}) must be at least {int(needed) + 1}: the longest retry schedule "
                f"({longest:.0f} s) plus the visibility timeout and the claim lease, or a late "
                "retry or redelivery could run a message twice.")
