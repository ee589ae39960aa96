"""The Celery application of the workers and beat: ``celery -A tasks worker``."""

from tasks import processing  # noqa: F401  (registers the tasks)
from tasks.app import app

__all__ = ["app"]
