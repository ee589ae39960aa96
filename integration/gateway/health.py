"""Liveness and readiness probes (outside ``/api/v1``, unauthenticated)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from integration.gateway.runtime import runtime
from integration.messages.problems import Unavailable

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Response:
    """The process is alive and serving."""
    return jsonify(status="ok")


@health.get("/readyz")
def readyz() -> Response:
    """Broker and store reachable; 503 when either is not, so a balancer stops sending."""
    rt = runtime()
    checks = {"store": _check(rt.store.ping), "broker": _check(rt.publisher.ping)}
    if any(value != "ok" for value in checks.values()):
        down = " and ".join(name for name, value in checks.items() if value != "ok")
        raise Unavailable(f"Not ready: the {down} cannot be reached.",
                          retry_after=rt.settings.retry_after_seconds, checks=checks)
    return jsonify(status="ready", checks=checks)


def _check(probe: object) -> str:
    try:
        probe()  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"unreachable: {type(exc).__name__}"
    return "ok"
