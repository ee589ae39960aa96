"""The retry policy, error classification and the duration checks made at start."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from integration.messages.registry import MessageType, Registry
from integration.messages.retry import (
    DownstreamError,
    PermanentError,
    RetryPolicy,
    TransientError,
    classify,
)
from integration.settings import ConfigurationError, Settings
from integration.worker.recovery import check_durations


def test_backoff_is_exponential_capped_and_jittered_within_bounds() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay_seconds=1, max_delay_seconds=10)
    assert [policy.ceiling(a) for a in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    for attempt in range(1, 7):
        delays = {policy.delay(attempt) for _ in range(50)}
        assert all(policy.ceiling(attempt) / 2 <= d <= policy.ceiling(attempt) for d in delays)
        assert len(delays) > 1, "jittered"
    assert policy.longest_schedule() == 1 + 2 + 4 + 8 + 10


@pytest.mark.parametrize("error, kind", [
    (TransientError("x"), "transient"), (TimeoutError(), "transient"),
    (ConnectionError(), "transient"), (DownstreamError(503), "transient"),
    (DownstreamError(429), "transient"), (RuntimeError("bug?"), "transient"),
    (PermanentError("no"), "permanent"), (DownstreamError(404), "permanent"),
    (ValueError("bad"), "permanent"), (KeyError("k"), "permanent"),
])
def test_errors_are_classified(error: BaseException, kind: str) -> None:
    assert classify(error) == kind


def test_validation_errors_are_permanent() -> None:
    class M(BaseModel):
        n: int

    with pytest.raises(ValidationError) as caught:
        M.model_validate({"n": "x"})
    assert classify(caught.value) == "permanent"


def test_start_is_refused_when_duplicate_guards_expire_too_soon() -> None:
    ok = Settings(jwt_secret="x" * 40)
    check_durations(ok, Registry())
    with pytest.raises(ConfigurationError, match="INTEGRATION_STATUS_TTL_SECONDS"):
        check_durations(Settings(jwt_secret="x" * 40, status_ttl_seconds=3600), Registry())
    with pytest.raises(ConfigurationError, match="INTEGRATION_IDEMPOTENCY_TTL_SECONDS"):
        check_durations(Settings(jwt_secret="x" * 40, idempotency_ttl_seconds=600), Registry())
    with pytest.raises(ConfigurationError, match="CLAIM_LEASE"):
        check_durations(Settings(jwt_secret="x" * 40, claim_lease_seconds=4000), Registry())


def test_a_types_longer_policy_counts_too() -> None:
    class M(BaseModel):
        n: int

    patient = MessageType("slow", M, lambda p, e: None,
                          retry=RetryPolicy(max_attempts=20, base_delay_seconds=60,
                                            max_delay_seconds=86_400))
    with pytest.raises(ConfigurationError):
        check_durations(Settings(jwt_secret="x" * 40), Registry([patient]))
