"""The registry of message types: name, payload model, queue and handler, read by every part."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from integration.envelope import Envelope

log = logging.getLogger(__name__)

#: Entry-point group through which another installed package adds message types.
ENTRY_POINT_GROUP = "integration.message_types"

#: A handler is a plain function: the validated payload and its envelope in, a JSON result out.
Handler = Callable[[Any, Envelope], Mapping[str, Any] | None]


class UnknownType(LookupError):
    """No message type is registered under this name."""


@dataclass(frozen=True)
class MessageType:
    """One registration: everything the gateway, the worker and the docs need about a type."""

    name: str
    payload: type[BaseModel]
    handler: Handler
    description: str = ""
    queue: str = field(default="")

    def __post_init__(self) -> None:
        if not self.queue:
            # Routing is by type to a queue of the same name: `celery worker -Q <type>`.
            object.__setattr__(self, "queue", self.name)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "queue": self.queue,
            "description": self.description,
            "schema": self.payload.model_json_schema(),
        }


class Registry:
    """Message types by name; registering a name twice is an error, not a silent override."""

    def __init__(self, types: Iterable[MessageType] = ()) -> None:
        self._types: dict[str, MessageType] = {}
        for message_type in types:
            self.register(message_type)

    def register(self, message_type: MessageType) -> MessageType:
        if message_type.name in self._types:
            raise ValueError(f"message type {message_type.name!r} is already registered")
        self._types[message_type.name] = message_type
        return message_type

    def get(self, name: str) -> MessageType:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownType(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[MessageType]:
        return iter(self._types.values())

    def names(self) -> list[str]:
        return list(self._types)

    def queues(self) -> list[str]:
        """Every queue, once, in registration order."""
        return list(dict.fromkeys(t.queue for t in self._types.values()))


def _from_entry_points(registry: Registry) -> None:
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry_point.load()
        provided = loaded() if callable(loaded) and not isinstance(loaded, MessageType) else loaded
        if isinstance(provided, MessageType):
            provided = [provided]
        for message_type in provided:
            registry.register(message_type)
        log.info("message types loaded from entry point %s", entry_point.name)


@cache
def default_registry() -> Registry:
    """Built-in types plus those of installed packages (entry points), built once per process."""
    from integration.builtin_types import BUILTIN_TYPES

    registry = Registry(BUILTIN_TYPES)
    _from_entry_points(registry)
    return registry
