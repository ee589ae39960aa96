"""Threshold rules as a state machine per series, shared by all workers through Redis."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

import redis

from integration.loop.rules import Rules, ThresholdRule
from integration.loop.templates import placeholder_values, render
from integration.loop.types import MetricPayload, alert_fingerprint

# KEYS[1]: the series' state hash (state, since = first breach, last = newest sample time).
# ARGV: sample time, breached (1/0), cleared (1/0), for_seconds, ttl seconds.
# Returns {outcome, since}: outcome is 'fired' or 'resolved' on an edge, 'stale' for a sample
# older than the newest applied, otherwise the state the series is in.
_OBSERVE = """
local at = tonumber(ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  if ARGV[2] ~= '1' then return {'ok', ''} end
  state = 'ok'
elseif at < tonumber(redis.call('HGET', KEYS[1], 'last')) then
  return {'stale', ''}
end
local since = redis.call('HGET', KEYS[1], 'since') or ''
local outcome = state
if state == 'ok' then
  if ARGV[2] == '1' then
    since = ARGV[1]
    if tonumber(ARGV[4]) <= 0 then state = 'firing'; outcome = 'fired'
    else state = 'pending'; outcome = 'pending' end
  end
elseif state == 'pending' then
  if ARGV[2] ~= '1' then state = 'ok'; outcome = 'ok'
  elseif at - tonumber(since) >= tonumber(ARGV[4]) then state = 'firing'; outcome = 'fired' end
elseif state == 'firing' then
  if ARGV[3] == '1' then state = 'ok'; outcome = 'resolved' end
end
local stored = since
if state == 'ok' then stored = '' end
redis.call('HSET', KEYS[1], 'state', state, 'since', stored, 'last', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {outcome, since}
"""

#: What an inline threshold's alert says.
_INLINE_SUMMARY = "{metric} is {value} (threshold {threshold})"

State = Literal["ok", "pending", "firing"]


@dataclass(frozen=True)
class AlertTransition:
    """A series' alert started firing or resolved: the data of one ``alert`` message."""

    rule: str
    name: str
    status: Literal["firing", "resolved"]
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str
    #: ISO 8601 time of the first breach of this incident (also on the resolution).
    starts_at: str
    #: The sample that caused the edge: its value and time (epoch seconds).
    value: float
    observed_at: float = field(repr=False)

    def payload(self) -> dict[str, Any]:
        """The ``alert`` payload (``AlertPayload`` fields only)."""
        return {
            "name": self.name,
            "status": self.status,
            "severity": self.severity,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "fingerprint": self.fingerprint,
            "starts_at": self.starts_at,
        }


class ThresholdEvaluator:
    """Evaluates metric samples against threshold rules; state in Redis, shared by workers.

    One series is one rule and one set of metric labels; its state is a hash under
    ``<prefix>:rules:<rule>:<fingerprint>`` (the fingerprint of the alert it raises), changed by
    one Lua script, so two workers observing the same series at once cannot both fire it::

        ok ──breach──▶ pending ──breach held for_seconds──▶ firing ──value crosses clear──▶ ok
         ▲                │ no breach                          (values between clear and the
         └────────────────┘                                     trigger keep it firing)

    Only the two edges that matter downstream are reported: ``firing`` (once per incident) and
    ``resolved`` (once, when the value crosses ``clear``). With ``for_seconds`` 0 a breach fires
    at once.

    Time is the sample's own ``observed_at`` when it has one (else the time of observation), so
    a backlog processed late behaves as it would have on time: ``for_seconds`` is measured
    between samples, and a sample older than the newest one already applied to its series is
    ignored. A timestamp in the future (a producer's clock ahead) counts as now, so one bad
    clock cannot hold a series. ``for_seconds`` is checked when a sample arrives; there is no
    timer. A series that stops reporting is forgotten ``ttl`` seconds after its last sample; if
    it was firing, no resolution is sent (monitoring of the collector itself should notice).

    Inline thresholds (``MetricPayload.thresholds``) act as anonymous rules with
    ``for_seconds`` 0, op ``>=`` and no hysteresis, as ``handle_metric`` compares them: one rule
    per level, named ``<metric>:warning`` and ``<metric>:critical``, each with that severity.
    File rule names cannot contain ``:``, so the two never share state.
    """

    def __init__(self, client: redis.Redis, prefix: str,
                 rules: Rules | Iterable[ThresholdRule], *, ttl: int = 24 * 3600,
                 inline: bool = True) -> None:
        self.client = client
        self.prefix = prefix
        self.rules = tuple(rules.thresholds if isinstance(rules, Rules) else rules)
        self.ttl = ttl
        self.inline = inline
        self._observe = client.register_script(_OBSERVE)

    @classmethod
    def from_settings(cls, settings: Any, client: redis.Redis, rules: Rules
                      ) -> ThresholdEvaluator:
        return cls(client, settings.key_prefix, rules, ttl=settings.rules_state_ttl_seconds)

    def key(self, rule: str, fingerprint: str) -> str:
        # The fingerprint is fixed-length and last, so a rule name cannot forge another key.
        return f"{self.prefix}:rules:{rule}:{fingerprint}"

    def observe(self, metric: MetricPayload | Mapping[str, Any],
                at: float | None = None) -> list[AlertTransition]:
        """Apply one sample to every rule it matches; the alerts that fired or resolved.

        ``at`` is the time of observation (epoch seconds, default now); the sample's
        ``observed_at``, when present and not in the future, is used instead.
        """
        sample = metric if isinstance(metric, MetricPayload) else \
            MetricPayload.model_validate(metric)
        now = time.time() if at is None else at
        sampled = _epoch(sample.observed_at) if sample.observed_at is not None else now
        sampled = min(sampled, now)
        rules = [r for r in self.rules if r.applies_to(sample.name, sample.labels)]
        if self.inline:
            rules += inline_rules(sample)
        if not rules:
            return []
        pipe = self.client.pipeline(transaction=False)
        series = []
        for rule in rules:
            labels = {**sample.labels, **rule.labels}
            fingerprint = alert_fingerprint(rule.name, labels)
            series.append((rule, labels, fingerprint))
            self._observe(
                keys=[self.key(rule.name, fingerprint)],
                args=[repr(sampled), int(rule.breached(sample.value)),
                      int(rule.cleared(sample.value)), repr(rule.for_seconds), self.ttl],
                client=pipe,
            )
        transitions = []
        for (rule, labels, fingerprint), reply in zip(series, pipe.execute(), strict=True):
            outcome, since = (_text(part) for part in reply)
            if outcome not in ("fired", "resolved"):
                continue
            values = placeholder_values(value=sample.value, metric=sample.name,
                                        threshold=rule.value, clear=rule.clear_level,
                                        labels=labels)
            transitions.append(AlertTransition(
                rule=rule.name,
                name=rule.name,
                status="firing" if outcome == "fired" else "resolved",
                severity=rule.severity,
                labels=labels,
                annotations={k: render(v, values) for k, v in rule.annotations.items()},
                fingerprint=fingerprint,
                starts_at=datetime.fromtimestamp(float(since), UTC).isoformat(
                    timespec="milliseconds"),
                value=sample.value,
                observed_at=sampled,
            ))
        return transitions

    def state(self, rule: str, labels: Mapping[str, str]) -> State:
        """Where the series of ``rule`` with these metric labels stands (for operators)."""
        known = next((r for r in self.rules if r.name == rule), None)
        alert_labels = {**labels, **(known.labels if known else {})}
        value = self.client.hget(self.key(rule, alert_fingerprint(rule, alert_labels)), "state")
        return cast(State, _text(value) if value else "ok")


def inline_rules(sample: MetricPayload) -> list[ThresholdRule]:
    """The anonymous rules of a sample's own thresholds (``<metric>:<level>``)."""
    if sample.thresholds is None:
        return []
    levels: tuple[tuple[Literal["warning", "critical"], float | None], ...] = (
        ("warning", sample.thresholds.warning), ("critical", sample.thresholds.critical))
    # model_construct: these names carry ':' on purpose, which file rules may not.
    return [ThresholdRule.model_construct(
        name=f"{sample.name}:{level}", metric=sample.name, match={}, op=">=", value=value,
        clear=None, for_seconds=0.0, severity=level, labels={},
        annotations={"summary": _INLINE_SUMMARY})
        for level, value in levels if value is not None]


def _epoch(moment: datetime) -> float:
    # A time without a zone is taken as UTC: a worker's local zone must not change the result.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

