"""Message bus for self-healing operations: gateway, routing, processing and status of messages."""

__version__ = "0.1.0"
