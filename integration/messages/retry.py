"""The retry policy and how a handler's failure is classified (transient or permanent).

Handlers signal intent by raising ``TransientError`` (retry later), ``PermanentError`` (dead
at once: an explicit rejection) or ``DownstreamError(status)`` (5xx, 408 and 429 transient,
other 4xx permanent). Timeouts and connection errors are transient; validation errors are
permanent; any other exception is retried within the attempt limit, so a poison message ends
dead after ``max_attempts``.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from integration.settings import Settings


class RetryPolicy(BaseModel):
    """Exponential backoff with jitter, capped, for a bounded number of attempts."""

    model_config = ConfigDict(frozen=True)

    max_attempts: int = Field(5, ge=1, le=100)
    base_delay_seconds: float = Field(1.0, gt=0)
    max_delay_seconds: float = Field(300.0, gt=0)
    jitter: bool = True

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1)))

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt``; "equal jitter" keeps at least half."""
        ceiling = self.ceiling(attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2) if self.jitter else ceiling

    def longest_schedule(self) -> float:
        """The longest time from the first attempt to the last one's start."""
        return sum(self.ceiling(a) for a in range(1, self.max_attempts))


class TransientError(Exception):
    """The downstream may recover: retry with backoff."""


class PermanentError(Exception):
    """Retrying cannot help (a handler's explicit rejection): dead at once."""


class DownstreamError(Exception):
    """A downstream answered with an HTTP status; 5xx, 408 and 429 are worth retrying."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or f"downstream answered {status}")
        self.status = status


Classification = Literal["transient", "permanent"]


def classify(error: BaseException) -> Classification:
    if isinstance(error, PermanentError | ValidationError | ValueError | TypeError | KeyError):
        return "permanent"
    if isinstance(error, DownstreamError):
        return "transient" if error.status >= 500 or error.status in (408, 429) else "permanent"
    return "transient"


def default_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(max_attempts=settings.retry_max_attempts,
                       base_delay_seconds=settings.retry_base_delay_seconds,
                       max_delay_seconds=settings.retry_max_delay_seconds)


def idempotency_ttl(settings: Settings) -> int:
    return settings.idempotency_ttl_seconds or settings.status_ttl_seconds
