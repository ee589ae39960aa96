"""The worker's Celery consumer: task events are published in batches, not one by one.

Celery buffers the ``task-*`` events of a worker with an event loop and flushes them at the
loop's next turn; a prefork worker handles one message per turn, so each event (received,
started, succeeded: three per message) cost its own ``PUBLISH``, on the same process that
fetches and acknowledges every message. Here the flush waits ``EVENTS_FLUSH_SECONDS``, so one
publish (``task.multi``, which Flower and ``celery events`` read like single events) carries
the events of many messages; Celery still flushes at once when 24 are buffered. Events reach
monitors at most that much later; buffered events are flushed at shutdown.

Celery's native delayed delivery (the ``DelayedDelivery`` step, on with quorum queues) is left
out: the service never publishes a countdown (waits are parked in Redis), and the step would
connect to every node of a multi-node broker URL in turn at each consumer start, retrying a
node that is cut off for twenty seconds while the worker takes nothing (decision 10).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

#: How long task events wait for company before they are published.
EVENTS_FLUSH_SECONDS = 0.1


class Consumer(CeleryConsumer):
    """Celery's consumer with the task-event flush delayed (``worker_consumer`` setting)."""

    #: When the pending flush was scheduled (None: none is). A flush the hub dropped (the
    #: consumer restarted after a connection loss) is scheduled again a second later.
    _events_flush_scheduled: float | None = None

    class Blueprint(CeleryConsumer.Blueprint):
        default_steps = [step for step in CeleryConsumer.Blueprint.default_steps
                         if not step.endswith(":DelayedDelivery")]

    def on_send_event_buffered(self) -> None:
        if self.hub is None:
            return
        now = time.monotonic()
        if self._events_flush_scheduled is not None and now - self._events_flush_scheduled < 1:
            return
        self._events_flush_scheduled = now
        self.hub.call_later(EVENTS_FLUSH_SECONDS, self._flush_buffered_events)

    def _flush_buffered_events(self) -> None:
        self._events_flush_scheduled = None
        self._flush_events()

    def shutdown(self) -> Any:
        """Publish what is still buffered before Celery closes the event dispatcher."""
        with contextlib.suppress(Exception):
            self._flush_events()
        return super().shutdown()
