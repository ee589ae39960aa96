"""The Celery application of the workers and beat: ``celery -A tasks worker``."""

from tasks import (  # noqa: F401  (tasks and signals)
    lifecycle,
    observability,
    processing,
    schedules,
    startup,
)
from tasks.app import app

__all__ = ["app"]
