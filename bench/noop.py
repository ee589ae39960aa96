"""The raw Celery worker of the end-to-end baseline: a no-op task that only counts itself.

Run as ``celery -A bench.noop worker -Q bench.noop``. The count (and the times of the first
and last task) are what the benchmark reads to know when the queue was drained.
"""

from __future__ import annotations

import time
from typing import cast

import redis

from bench.baselines import NOOP_TASK, raw_celery
from integration.app import get_settings

app = raw_celery(get_settings().broker)
# Stock worker settings: the baseline is what Celery does out of the box.
_counter = redis.Redis.from_url(get_settings().redis_url)


@app.task(name=NOOP_TASK, ignore_result=True)
def noop(envelope: object, total: int = 0) -> None:
    """Do nothing but count; the first and the ``total``-th record their time."""
    done = cast(int, _counter.incr("bench:noop:done"))
    if done == 1:
        _counter.set("bench:noop:first", time.time())
    if total and done >= total:
        _counter.set("bench:noop:last", time.time())
