"""Message bus for self-healing operations: gateway, routing, processing and status of messages.

The public API, importable from here: ``MessageType`` and ``Registry`` (message types),
``consumer`` and ``ConsumerContext`` (consumers of events), ``current_emit``, ``Envelope``,
``RetryPolicy`` and the errors a handler raises, ``idempotency_key`` (the key of an effect),
and ``Client`` (submitting from Python). Names load on first use, so importing the package
costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from integration.version import __version__

#: Each public name and the module that defines it.
_PUBLIC = {
    "MessageType": "integration.messages.registry",
    "Registry": "integration.messages.registry",
    "Envelope": "integration.messages.envelope",
    "RetryPolicy": "integration.messages.retry",
    "TransientError": "integration.messages.retry",
    "PermanentError": "integration.messages.retry",
    "DownstreamError": "integration.messages.retry",
    "idempotency_key": "integration.messages.effects",
    "consumer": "integration.events.consumers",
    "ConsumerContext": "integration.events.consumers",
    "current_emit": "integration.events.consumers",
    "Client": "integration.ops.client",
}

__all__ = [
    "Client", "ConsumerContext", "DownstreamError", "Envelope", "MessageType",
    "PermanentError", "Registry", "RetryPolicy", "TransientError", "__version__", "consumer",
    "current_emit", "idempotency_key",
]

if TYPE_CHECKING:
    from integration.events.consumers import ConsumerContext, consumer, current_emit
    from integration.messages.effects import idempotency_key
    from integration.messages.envelope import Envelope
    from integration.messages.registry import MessageType, Registry
    from integration.messages.retry import (
        DownstreamError,
        PermanentError,
        RetryPolicy,
        TransientError,
    )
    from integration.ops.client import Client


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'integration' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
