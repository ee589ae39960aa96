"""The processing task: thin Celery glue around ``integration.processor``."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import redis
from celery import Task

from integration.jsonlimits import JsonLimits
from integration.processor import Delivery, Outcome, Processor
from integration.registry import default_registry
from integration.retry import default_policy
from integration.routing import PROCESS_TASK
from integration.services import build_dispatcher, build_guards, build_submitter
from integration.settings import get_settings
from tasks.app import app


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
    # The store failing (unreachable, or full under noeviction) must not lose the message:
    # retry, never ack-and-drop.
    autoretry_for=(redis.RedisError,),
    retry_backoff=1,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=None,
)
def process(self: ProcessingTask, envelope: Any) -> Outcome:
    """Process one message envelope (a CloudEvents JSON object); the public entry point.

    Returns where the delivery left the message (``Outcome``; ``to_json()`` for a dict): not
    stored (no result backend), but read by the metrics signal handlers.
    """
    info = self.request.delivery_info or {}
    return self.processor.process(
        envelope,
        Delivery(task_id=self.request.id, queue=info.get("routing_key"),
                 redelivered=bool(info.get("redelivered"))),
    )
