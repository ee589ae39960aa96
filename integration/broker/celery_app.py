"""The Celery app object, configured from ``celeryconfig``; ``tasks/`` adds the tasks."""

from __future__ import annotations

from celery import Celery


def create_celery(main: str, loader: str | None = None) -> Celery:
    """A Celery app named ``main``; ``loader`` (a class path) reads ``celeryconfig`` instead of
    Celery's own."""
    app = Celery(main, loader=loader)
    app.config_from_object("celeryconfig")
    return app
