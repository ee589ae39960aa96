"""The type registry: one registration per type, queues named from it, entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest
from pydantic import BaseModel

from integration.app import default_registry, route_task
from integration.messages import registry as registry_module
from integration.messages.registry import MessageType, Registry, UnknownType
from integration.messages.routing import (
    CELERY_QUEUE,
    DEFAULT_QUEUE,
    PROCESS_TASK,
    declare_queues,
)


class Ticket(BaseModel):
    title: str


def handle_ticket(payload: Ticket, envelope: Any) -> dict[str, str]:
    return {"title": payload.title}


TICKET = MessageType("ticket", Ticket, handle_ticket, "A ticket.")


def test_builtin_types_have_queues_of_their_own() -> None:
    registry = default_registry()
    builtins = ["metric", "alert", "diagnosis", "action", "action.result", "event"]
    assert registry.names()[:6] == builtins
    assert registry.queues()[:6] == builtins


def test_registering_a_name_twice_is_an_error() -> None:
    registry = Registry([TICKET])
    with pytest.raises(ValueError, match="already registered"):
        registry.register(MessageType("ticket", Ticket, handle_ticket))


def test_unknown_type_raises() -> None:
    with pytest.raises(UnknownType):
        Registry().get("nope")


def test_a_type_may_share_a_queue() -> None:
    registry = Registry([TICKET, MessageType("ticket.note", Ticket, handle_ticket,
                                             queue="ticket")])
    assert registry.queues() == ["ticket"]


def test_router_sends_process_calls_to_the_queue_of_their_type() -> None:
    assert route_task(PROCESS_TASK, [{"type": "diagnosis"}], {}, {}) == {"queue": "diagnosis"}
    assert route_task(PROCESS_TASK, [], {"envelope": {"type": "alert"}}, {}) == {
        "queue": "alert"}
    assert route_task(PROCESS_TASK, ["garbage"], {}, {}) == {"queue": DEFAULT_QUEUE}
    assert route_task(PROCESS_TASK, [{"type": "nope"}], {}, {}) == {"queue": DEFAULT_QUEUE}
    assert route_task("other.task", [], {}, {}) is None


def test_declare_queues_include_the_default_queue_and_celerys() -> None:
    names = [queue.name for queue in declare_queues(Registry([TICKET]))]
    assert names == ["ticket", DEFAULT_QUEUE, CELERY_QUEUE]
    assert all(queue.queue_arguments is None for queue in declare_queues(Registry([TICKET])))


def test_quorum_queues_carry_the_delivery_limit_and_dead_letter_to_their_own_queue() -> None:
    """With a delivery limit every queue is a quorum queue that dead-letters (at least once)
    to the dead-letter queue, which is declared too, as a quorum queue without a limit."""
    from integration.messages.routing import DEAD_LETTER_QUEUE

    queues = declare_queues(Registry([TICKET]), delivery_limit=7)
    assert [q.name for q in queues] == ["ticket", DEFAULT_QUEUE, CELERY_QUEUE, DEAD_LETTER_QUEUE]
    for queue in queues[:-1]:
        assert queue.queue_arguments == {
            "x-queue-type": "quorum", "x-delivery-limit": 7,
            "x-dead-letter-exchange": DEAD_LETTER_QUEUE,
            "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
            "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    assert queues[-1].queue_arguments == {"x-queue-type": "quorum"}
    assert queues[-1].exchange.name == queues[-1].routing_key == DEAD_LETTER_QUEUE


def test_entry_points_add_types(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another installed package adds types through the integration.message_types group."""
    point = EntryPoint("tickets", "tests.unit.messages.test_registry:TICKET",
                       registry_module.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry_module, "entry_points",
                        lambda group: [point] if group == registry_module.ENTRY_POINT_GROUP
                        else [])
    registry = Registry()
    registry_module._from_entry_points(registry)
    assert registry.get("ticket").handler is handle_ticket
