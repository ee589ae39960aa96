"""The workers' Celery app, configured from ``celeryconfig``."""

from integration.broker.celery_app import create_celery

app = create_celery("tasks")
