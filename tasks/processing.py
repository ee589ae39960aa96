"""The processing task: thin Celery glue around ``integration.worker.processor``.

Celery's task states tell the same story as the status API: ``succeeded`` is SUCCESS, a
parked retry (or a deferral) is RETRY, ``dead`` is FAILURE with the error; the task id is the
message id; the shadow name (set by the publisher) shows the message type.
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

import redis
from celery import Task
from celery.exceptions import Reject, Retry

from integration import logs, tracing
from integration.app import (
    build_dispatcher,
    build_guards,
    build_submitter,
    default_registry,
    get_settings,
)
from integration.broker.publisher import Outgoing
from integration.broker.submission import Submitter
from integration.messages import tracecontext
from integration.messages.jsonlimits import JsonLimits
from integration.messages.registry import UnknownType
from integration.messages.retry import default_policy
from integration.messages.routing import CELERY_QUEUE, DEAD_LETTER_QUEUE, PROCESS_TASK
from integration.messages.status import Status
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


class MessageDead(Exception):
    """The message ended ``dead`` (recorded, replayable): Celery reports the task FAILURE.
    Pickled to the worker's main process by its message alone (the outcome stays here)."""

    def __init__(self, message: str, outcome: Outcome | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome


def dead(outcome: Outcome) -> MessageDead:
    return MessageDead(f"{outcome.type} message dead: {outcome.error or 'no error recorded'}",
                       outcome)


def waiting(outcome: Outcome) -> Retry:
    """The message waits in the store for another attempt (parked retry, deferral, claim
    held elsewhere): Celery reports RETRY. Raised, never ``Task.retry``, which would publish
    a countdown copy of the message."""
    retry = Retry(f"{outcome.status}: {outcome.error or 'waiting'}")
    retry.outcome = outcome  # read by the postrun signal
    return retry


#: Where a delivery left its message, and the Celery state that says the same.
_RETRY = frozenset({Status.RETRYING, Status.DEFERRED, Status.PROCESSING})


def outcome_of(value: Any) -> Outcome | None:
    """The outcome a task returned or carried in the exception it raised."""
    return value if isinstance(value, Outcome) else getattr(value, "outcome", None)


class ProcessingTask(Task):
    """Holds one processor (and its Redis pool) per worker process."""

    @cached_property
    def submitter(self) -> Submitter:
        return build_submitter(get_settings(), origin="worker")

    @cached_property
    def processor(self) -> Processor:
        settings = get_settings()
        submitter = self.submitter
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
    throws=(MessageDead,),  # expected: logged without a traceback
)
def process(self: ProcessingTask, envelope: Any) -> Outcome:
    """Process one message envelope (a CloudEvents JSON object); the public entry point.

    Returns where the delivery left the message (``Outcome``; ``to_json()`` for a dict): not
    stored (no result backend), but read by the metrics signal handlers.
    """
    info = self.request.delivery_info or {}
    if isinstance(envelope, dict) and not envelope.get("id"):
        envelope = {**envelope, "id": self.request.id}  # the status API knows the task id
    if info.get("routing_key") == DEAD_LETTER_QUEUE:
        return dead_lettered(self.processor, envelope, self.request.id)
    if info.get("routing_key") == CELERY_QUEUE:
        passed_on = pass_on(self.submitter, envelope, self.request.id)
        if passed_on is not None:
            return passed_on
    parent = tracecontext.of(envelope) if isinstance(envelope, dict) else None
    try:
        with tracing.span("process", "consumer", parent, {
                "messaging.system": "celery", "messaging.message.id": str(self.request.id),
                "integration.type": _type_name(envelope),
                "messaging.destination.name": str(info.get("routing_key") or "")}) as span:
            outcome = self.processor.process(
                envelope,
                Delivery(task_id=self.request.id, queue=info.get("routing_key"),
                         redelivered=bool(info.get("redelivered"))),
            )
            if span is not None:
                span.set_attribute("integration.status", str(outcome.status))
    except redis.RedisError as exc:
        # The store failing (unreachable, or full under noeviction) must not lose the
        # message, nor ack it.
        raise hand_back(exc) from None
    if outcome.fenced:
        return outcome  # the delivery that took the message over reports its outcome
    if outcome.status is Status.DEAD:
        raise dead(outcome)
    if outcome.status in _RETRY:
        raise waiting(outcome)
    return outcome


def dead_lettered(processor: Processor, envelope: Any, task_id: str) -> Outcome:
    """A message RabbitMQ moved to the dead-letter queue (over the quorum queues' delivery
    limit) is recorded ``dead`` without running again; one already final, or without a record
    (a direct caller's that never started), is only logged."""
    kind = _type_name(envelope)
    try:
        status = processor.delivery_limit_exceeded(
            envelope, Delivery(task_id=task_id, queue=DEAD_LETTER_QUEUE),
            get_settings().amqp_delivery_limit)
    except redis.RedisError as exc:
        raise hand_back(exc) from None
    if status is None:
        log.warning("dead-lettered message not recorded dead: it has no record or is final",
                    task_id=task_id, type=kind)
        return Outcome(status=Status.DEAD, type=kind, channel="direct")
    raise dead(Outcome(status=Status.DEAD, type=kind, channel="direct",
                       error="DeliveryLimitExceeded"))


def _type_name(envelope: Any) -> str:
    kind = envelope.get("type") if isinstance(envelope, dict) else None
    return kind[:100] if isinstance(kind, str) else "unknown"


def pass_on(submitter: Submitter, envelope: Any, task_id: str) -> Outcome | None:
    """A message on Celery's default queue (a producer without this configuration) goes on
    to its type's queue as it is, under the same id; None when it has no known type (it is
    then processed here, and recorded dead like any message of an unknown type)."""
    kind = envelope.get("type") if isinstance(envelope, dict) else None
    if not isinstance(kind, str):
        return None
    try:
        queue = default_registry().get(kind).queue
    except UnknownType:
        return None
    published = submitter.publisher.publish([Outgoing(id=str(envelope.get("id") or task_id),
                                                      envelope=envelope, queue=queue)])
    if not published.sent(0):
        reason = type(published.error).__name__ if published.error else "not confirmed"
        raise Reject(f"not passed on to {queue}: {reason}", requeue=True)
    log.info("message passed on from Celery's default queue", queue=queue)
    return Outcome(status=Status.QUEUED, type=kind, channel="direct")
