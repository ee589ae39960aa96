"""Task names and queues: the public contract with workers and direct Celery callers.

Task names travel inside queued messages and are called by other services, so they are
explicit strings that never change when code moves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kombu import Exchange, Queue

from integration.messages.registry import Registry, UnknownType

#: The one task that processes every message type: ``process(envelope: dict)``.
PROCESS_TASK = "integration.process"
#: Queue for messages whose type no registration claims (the worker records them dead).
DEFAULT_QUEUE = "integration.default"
#: Celery's own default queue, where a producer without this configuration sends the task;
#: workers consume it and pass each message on to its type's queue.
CELERY_QUEUE = "celery"
#: RabbitMQ quorum queues: where a message delivered more often than the delivery limit goes
#: (through an exchange of the same name); a worker consuming it records the message dead.
DEAD_LETTER_QUEUE = "integration.dead-letter"


def queue_for(message_type: str, registry: Registry) -> str:
    """The queue of a message type; unknown types go to the default queue."""
    try:
        return registry.get(message_type).queue
    except UnknownType:
        return DEFAULT_QUEUE


def queue_names(registry: Registry) -> list[str]:
    """Every queue a message may wait in: each type's, the default queue and Celery's."""
    return [*registry.queues(), DEFAULT_QUEUE, CELERY_QUEUE]


def declare_queues(registry: Registry, *, delivery_limit: int | None = None) -> list[Queue]:
    """One durable queue per message type, plus the default queue and Celery's; with a
    ``delivery_limit``, RabbitMQ quorum queues that move a message delivered more often than
    that to the dead-letter queue, which is declared too."""
    if delivery_limit is None:
        return [_queue(name) for name in queue_names(registry)]
    return [*(_queue(name, quorum_arguments(delivery_limit)) for name in queue_names(registry)),
            _queue(DEAD_LETTER_QUEUE, {"x-queue-type": "quorum"})]


def quorum_arguments(delivery_limit: int) -> dict[str, Any]:
    """The arguments of every quorum queue but the dead-letter queue. At-least-once
    dead-lettering (RabbitMQ 3.10+) keeps a message until the dead-letter queue confirms it;
    it needs the ``reject-publish`` overflow."""
    return {"x-queue-type": "quorum", "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": DEAD_LETTER_QUEUE,
            "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
            "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def _queue(name: str, arguments: dict[str, Any] | None = None) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name,
                 queue_arguments=arguments)


class Router:
    """Celery router: a ``process`` call goes to the queue of its envelope's type.

    This makes a plain ``app.send_task("integration.process", args=[envelope])`` from a
    producer with this configuration land on the right queue without knowing queue names.
    """

    def __init__(self, registry: Callable[[], Registry]) -> None:
        self.registry = registry

    def __call__(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any],
                 options: Mapping[str, Any], task: Any = None,
                 **_: Any) -> dict[str, str] | None:
        if name != PROCESS_TASK:
            return None
        envelope = args[0] if args else kwargs.get("envelope")
        message_type = envelope.get("type") if isinstance(envelope, Mapping) else None
        return {"queue": queue_for(message_type if isinstance(message_type, str) else "",
                                   self.registry())}
