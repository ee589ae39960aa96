"""Messages sent on a schedule (celery-redbeat) and beat's scheduler."""
