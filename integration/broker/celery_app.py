"""The Celery app object, configured from ``celeryconfig``; ``tasks/`` adds the tasks."""

from __future__ import annotations

from celery import Celery


def create_celery(main: str) -> Celery:
    app = Celery(main)
    app.config_from_object("celeryconfig")
    return app
