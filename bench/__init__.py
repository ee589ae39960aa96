"""``make bench``: the service against raw Celery and Flask, measured side by side in one run."""
