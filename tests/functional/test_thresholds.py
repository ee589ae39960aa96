"""Threshold rules against the real Redis: for_seconds, hysteresis, series, concurrency."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from integration.loop.rules import ThresholdRule
from integration.loop.thresholds import AlertTransition, ThresholdEvaluator
from integration.loop.types import AlertPayload, MetricPayload, alert_fingerprint

T0 = 1_700_000_000.0


def rule(**fields: Any) -> ThresholdRule:
    base: dict[str, Any] = {"name": "HighCPU", "metric": "cpu", "op": ">", "value": 90,
                            "severity": "critical"}
    return ThresholdRule.model_validate({**base, **fields})


def sample(value: float, **labels: str) -> MetricPayload:
    return MetricPayload(name="cpu", value=value, labels=labels or {"host": "web-1"})


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, inside the test database."""
    return f"test-rules-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def evaluator_for(redis_client: redis.Redis, prefix: str) -> Any:
    def build(*rules: ThresholdRule, **options: Any) -> ThresholdEvaluator:
        return ThresholdEvaluator(redis_client, prefix, rules, **options)

    return build


def statuses(transitions: list[AlertTransition]) -> list[tuple[str, str]]:
    return [(t.name, t.status) for t in transitions]


def test_no_alert_before_for_seconds_then_one(evaluator_for: Any) -> None:
    """A breach fires only once it has held for for_seconds, dated from the first breach."""
    evaluator = evaluator_for(rule(for_seconds=60))
    assert evaluator.observe(sample(95), at=T0) == []
    assert evaluator.state("HighCPU", {"host": "web-1"}) == "pending"
    assert evaluator.observe(sample(96), at=T0 + 30) == []
    fired = evaluator.observe(sample(97), at=T0 + 60)
    assert statuses(fired) == [("HighCPU", "firing")]
    assert fired[0].starts_at == iso(T0)
    assert evaluator.observe(sample(98), at=T0 + 90) == []


def test_pending_resets_when_the_breach_does_not_hold(evaluator_for: Any) -> None:
    """A sample without breach while pending starts the wait over."""
    evaluator = evaluator_for(rule(for_seconds=60))
    evaluator.observe(sample(95), at=T0)
    assert evaluator.observe(sample(50), at=T0 + 30) == []
    assert evaluator.observe(sample(95), at=T0 + 60) == []
    assert evaluator.observe(sample(95), at=T0 + 100) == []
    fired = evaluator.observe(sample(95), at=T0 + 120)
    assert statuses(fired) == [("HighCPU", "firing")]
    assert fired[0].starts_at == iso(T0 + 60)


def test_flapping_series_fires_once_and_resolves_once(evaluator_for: Any) -> None:
    """Values oscillating around the trigger but above clear give one firing, then one
    resolution when the value crosses clear."""
    evaluator = evaluator_for(rule(clear=80))
    seen: list[AlertTransition] = []
    for step, value in enumerate([95, 85, 97, 89, 91, 82, 99, 81, 79, 85, 88, 72]):
        seen += evaluator.observe(sample(value), at=T0 + step * 10)
    assert [t.status for t in seen] == ["firing", "resolved"]
    assert seen[1].value == 79
    assert seen[0].starts_at == seen[1].starts_at == iso(T0)


def test_without_clear_the_trigger_level_resolves(evaluator_for: Any) -> None:
    """With no clear level, the alert resolves as soon as the condition stops holding."""
    evaluator = evaluator_for(rule())
    assert statuses(evaluator.observe(sample(95), at=T0)) == [("HighCPU", "firing")]
    assert statuses(evaluator.observe(sample(90), at=T0 + 1)) == [("HighCPU", "resolved")]


def test_falling_rule_uses_clear_above_value(evaluator_for: Any) -> None:
    """A ``<`` rule fires below its value and resolves only once the value reaches clear."""
    evaluator = evaluator_for(rule(name="DiskLow", metric="cpu", op="<", value=10, clear=15))
    seen: list[AlertTransition] = []
    for step, value in enumerate([12, 9, 11, 8, 14.9, 15, 16]):
        seen += evaluator.observe(sample(value), at=T0 + step)
    assert [(t.status, t.value) for t in seen] == [("firing", 9), ("resolved", 15)]


def test_two_series_are_independent(evaluator_for: Any) -> None:
    """Series with different labels fire and resolve on their own."""
    evaluator = evaluator_for(rule(clear=80))
    a = evaluator.observe(sample(95, host="a"), at=T0)
    assert evaluator.observe(sample(50, host="b"), at=T0) == []
    b = evaluator.observe(sample(95, host="b"), at=T0 + 1)
    assert [t.labels["host"] for t in a + b] == ["a", "b"]
    assert a[0].fingerprint != b[0].fingerprint
    resolved = evaluator.observe(sample(50, host="a"), at=T0 + 2)
    assert [(t.labels["host"], t.status) for t in resolved] == [("a", "resolved")]
    assert evaluator.state("HighCPU", {"host": "b"}) == "firing"


def test_transition_is_an_alert_payload(evaluator_for: Any) -> None:
    """A firing carries the alert's name, severity, merged labels, filled annotations and
    the fingerprint the alert stage computes."""
    evaluator = evaluator_for(rule(labels={"team": "ops"},
                                   annotations={"summary": "{metric} {value} on {labels.host}, "
                                                           "over {threshold}"}))
    [fired] = evaluator.observe(sample(95.5), at=T0)
    alert = AlertPayload.model_validate(fired.payload())
    assert alert.status == "firing" and alert.severity == "critical"
    assert alert.labels == {"host": "web-1", "team": "ops"}
    assert alert.annotations == {"summary": "cpu 95.5 on web-1, over 90"}
    assert alert.fingerprint == alert_fingerprint("HighCPU", alert.labels)


def test_rule_matchers_select_series(evaluator_for: Any) -> None:
    """A rule only sees samples whose labels equal its matchers."""
    evaluator = evaluator_for(rule(match={"env": "prod"}))
    assert evaluator.observe(sample(99, host="a", env="dev"), at=T0) == []
    assert len(evaluator.observe(sample(99, host="a", env="prod"), at=T0)) == 1
    assert evaluator.observe(MetricPayload(name="mem", value=99, labels={"env": "prod"}),
                             at=T0) == []


def test_redelivered_sample_fires_once(evaluator_for: Any) -> None:
    """The same sample processed twice (a broker redelivery) gives one firing."""
    evaluator = evaluator_for(rule())
    first = evaluator.observe(sample(95), at=T0)
    assert len(first) == 1
    assert evaluator.observe(sample(95), at=T0) == []


def test_concurrent_breaches_of_one_series_fire_once(redis_url: str, prefix: str) -> None:
    """Many workers observing breaching samples of one series at once give one firing."""
    fired: list[AlertTransition] = []
    barrier = threading.Barrier(16)
    lock = threading.Lock()

    def work(worker: int) -> None:
        client = redis.Redis.from_url(redis_url)
        evaluator = ThresholdEvaluator(client, prefix, [rule(clear=80)])
        barrier.wait()
        for step in range(25):
            found = evaluator.observe(sample(91 + step % 5), at=T0 + step)
            with lock:
                fired.extend(found)
        client.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert statuses(fired) == [("HighCPU", "firing")]


def test_sample_time_orders_delayed_samples(evaluator_for: Any) -> None:
    """``observed_at`` is the sample's time: for_seconds counts between samples even in a
    backlog, and a sample older than the newest one applied is ignored."""
    evaluator = evaluator_for(rule(for_seconds=60, clear=80))
    now = T0 + 3600

    def at(offset: float, value: float) -> MetricPayload:
        return MetricPayload(name="cpu", value=value, labels={"host": "web-1"},
                             observed_at=datetime.fromtimestamp(T0 + offset, UTC))

    assert evaluator.observe(at(0, 95), at=now) == []
    fired = evaluator.observe(at(60, 95), at=now)
    assert statuses(fired) == [("HighCPU", "firing")] and fired[0].starts_at == iso(T0)
    assert evaluator.observe(at(30, 10), at=now) == []  # late and stale: no resolution
    assert [t.status for t in evaluator.observe(at(90, 10), at=now)] == ["resolved"]


def test_future_sample_time_counts_as_now(evaluator_for: Any) -> None:
    """A producer clock ahead cannot hold a series: its sample counts as observed now."""
    evaluator = evaluator_for(rule())
    ahead = MetricPayload(name="cpu", value=95, labels={"host": "web-1"},
                          observed_at=datetime.fromtimestamp(T0 + 86400, UTC))
    [fired] = evaluator.observe(ahead, at=T0)
    assert fired.starts_at == iso(T0)
    assert [t.status for t in evaluator.observe(sample(10), at=T0 + 1)] == ["resolved"]


def test_state_expires_after_inactivity(evaluator_for: Any, redis_client: redis.Redis,
                                        prefix: str) -> None:
    """Each series' key carries the configured TTL, renewed by each sample, so abandoned
    series do not stay in Redis; a series never breached keeps no key at all."""
    evaluator = evaluator_for(rule(), ttl=600)
    evaluator.observe(sample(50, host="quiet"), at=T0)
    [fired] = evaluator.observe(sample(95), at=T0)
    keys = [k.decode() for k in redis_client.scan_iter(f"{prefix}:rules:*")]
    assert keys == [f"{prefix}:rules:HighCPU:{fired.fingerprint}"]
    assert 590 <= redis_client.ttl(keys[0]) <= 600


def test_inline_thresholds_act_as_anonymous_rules(evaluator_for: Any) -> None:
    """A sample's own thresholds fire ``<metric>:<level>`` alerts at once, one per level,
    without hysteresis."""
    evaluator = evaluator_for()

    def inline(value: float) -> MetricPayload:
        return MetricPayload(name="cpu", value=value, labels={"host": "web-1"},
                             thresholds={"warning": 80, "critical": 95})

    assert statuses(evaluator.observe(inline(85), at=T0)) == [("cpu:warning", "firing")]
    assert evaluator.observe(inline(90), at=T0 + 1) == []
    [critical] = evaluator.observe(inline(96), at=T0 + 2)
    assert (critical.name, critical.severity) == ("cpu:critical", "critical")
    assert critical.annotations == {"summary": "cpu is 96 (threshold 95)"}
    assert sorted(statuses(evaluator.observe(inline(50), at=T0 + 3))) == [
        ("cpu:critical", "resolved"), ("cpu:warning", "resolved")]
    assert evaluator_for(inline=False).observe(inline(99), at=T0 + 4) == []
