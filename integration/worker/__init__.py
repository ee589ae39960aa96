"""One delivery and the loops around it (no Celery import)."""
