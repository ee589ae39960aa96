"""The workers' Celery app, configured from ``celeryconfig``."""

from integration.broker.celery_app import create_celery

# The loader turns a configuration mistake met in celeryconfig into one line and exit 1.
app = create_celery("tasks", loader="tasks.startup:Loader")
