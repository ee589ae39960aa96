"""The Celery application of the workers and beat: ``celery -A tasks worker``."""

# Metrics must pick prometheus_client's multiprocess mode before anything imports it.
from integration.app import get_settings
from integration.worker.metrics import prepare_multiprocess

prepare_multiprocess(get_settings().worker_metrics_dir)

from tasks import (  # noqa: E402, F401  (tasks and signals)
    lifecycle,
    observability,
    processing,
    schedules,
)
from tasks.app import app  # noqa: E402

__all__ = ["app"]
