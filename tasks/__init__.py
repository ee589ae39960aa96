"""The Celery application of the workers and beat: ``celery -A tasks worker``."""

from tasks import lifecycle, processing  # noqa: F401  (registers tasks and signals)
from tasks.app import app

__all__ = ["app"]
