"""The registry of message types: name, payload model, queue and handler, read by every part."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from integration.messages.envelope import Envelope
from integration.messages.retry import RetryPolicy
from integration.settings import ConfigurationError

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
    #: Overrides the default retry policy (``INTEGRATION_RETRY_*``) for this type.
    retry: RetryPolicy | None = None
    #: The downstream target a message acts on (its circuit breaker), read from the payload.
    target: Callable[[Any], str] | None = None
    #: For actions: what is done to the target; turns on its rate limit and loop detection.
    action_key: Callable[[Any], str] | None = None
    #: Made by the service itself (deliveries to consumers and webhooks): no client may
    #: submit one, and the worker runs only the envelope the service recorded.
    internal: bool = False

    def __post_init__(self) -> None:
        if not self.queue:
            # Routing is by type to a queue of the same name: `celery worker -Q <type>`.
            object.__setattr__(self, "queue", self.name)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "queue": self.queue,
            "description": self.description,
            "internal": self.internal,
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


def _register_loaded(registry: Registry, loaded: Any) -> None:
    """Register what an entry point or module path names: a type, a list, or a factory."""
    provided = loaded() if callable(loaded) and not isinstance(loaded, MessageType) else loaded
    if isinstance(provided, MessageType):
        provided = [provided]
    for message_type in provided:
        registry.register(message_type)


def _from_entry_points(registry: Registry) -> None:
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        _register_loaded(registry, entry_point.load())
        log.info("message types loaded from entry point %s", entry_point.name)


def import_named(path: str, variable: str, default: str) -> Any:
    """What ``module:attribute`` names (``default`` without an attribute); a module that is
    not there, or lacks the attribute, is a ``ConfigurationError`` naming ``variable``."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if missing != module_name and not module_name.startswith(missing + "."):
            raise ConfigurationError(
                f"{variable} names {path!r}, whose module imports {missing!r}, which is not "
                f"installed: install it, or remove {path!r} from {variable}") from None
        raise ConfigurationError(
            f"{variable} names {path!r}, but there is no module {module_name!r} in the "
            f"working directory ({os.getcwd()}) or the installed packages: correct the "
            f"name in {variable}, or install the module") from None
    try:
        return getattr(module, attribute or default)
    except AttributeError:
        raise ConfigurationError(
            f"{variable} names {path!r}, but module {module_name!r} has no "
            f"{attribute or default!r}: correct the name in {variable}") from None


def _from_module_paths(registry: Registry, paths: str) -> None:
    for path in filter(None, (p.strip() for p in paths.split(","))):
        _register_loaded(registry, import_named(path, "INTEGRATION_TYPE_MODULES", "TYPES"))
        log.info("message types loaded from %s", path)


def load_types(registry: Registry, module_paths: str) -> Registry:
    """Add the types of installed packages (entry points), then those of ``module_paths``
    (comma-separated ``module:attribute``) to ``registry``."""
    _from_entry_points(registry)
    _from_module_paths(registry, module_paths)
    return registry
