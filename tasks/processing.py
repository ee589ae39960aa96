"""The processing task: thin Celery glue around ``integration.processor``."""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

import redis
from celery import Task
from celery.exceptions import Reject

from integration import logs
from integration.app import (
    build_dispatcher,
    build_guards,
    build_submitter,
    default_registry,
    get_settings,
)
from integration.messages.jsonlimits import JsonLimits
from integration.messages.retry import default_policy
from integration.messages.routing import PROCESS_TASK
from integration.worker.processor import Delivery, Outcome, Processor
from tasks.app import app

log = logs.get_logger("integration.worker")

#: Seconds a delivery waits before it hands its message back during a store outage, so an
#: outage is not a busy loop of redeliveries.
OUTAGE_PAUSE_SECONDS = 1.0


def hand_back(exc: redis.RedisError) -> Reject:
    """The message goes back to the broker as it is: never a Celery retry, whose countdown
    publish fails in the same outage and ends in a reject without requeue. What the broker
    loses meanwhile, the reconciler sends again."""
    log.warning("store unreachable; message handed back to the broker",
                error=f"{type(exc).__name__}: {exc}"[:300])
    time.sleep(OUTAGE_PAUSE_SECONDS)
    return Reject(f"store unreachable: {type(exc).__name__}", requeue=True)


class ProcessingTask(Task):
    """Holds one processor (and its Redis pool) per worker process."""

    @cached_property
    def processor(self) -> Processor:
        settings = get_settings()
        submitter = build_submitter(settings, origin="worker")
        store = submitter.store
        return Processor(default_registry(), store,
                         JsonLimits(settings.max_json_depth, settings.max_string_length),
                         retry=default_policy(settings), claim_lease=settings.claim_lease_seconds,
                         guards=build_guards(settings, store.client),
                         dispatcher=build_dispatcher(submitter),
                         outbox_grace=settings.outbox_grace_seconds)


@app.task(
    name=PROCESS_TASK,
    base=ProcessingTask,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def process(self: ProcessingTask, envelope: Any) -> Outcome:
    """Process one message envelope (a CloudEvents JSON object); the public entry point.

    Returns where the delivery left the message (``Outcome``; ``to_json()`` for a dict): not
    stored (no result backend), but read by the metrics signal handlers.
    """
    info = self.request.delivery_info or {}
    try:
        return self.processor.process(
            envelope,
            Delivery(task_id=self.request.id, queue=info.get("routing_key"),
                     redelivered=bool(info.get("redelivered"))),
        )
    except redis.RedisError as exc:
        # The store failing (unreachable, or full under noeviction) must not lose the
        # message, nor ack it.
        raise hand_back(exc) from None
