"""The WSGI servers the REST figures are compared under, and the command line of each.

``gevent`` is gunicorn with gevent workers, as ``integration serve`` runs the gateway (and
the only one that serves the WebSocket, ``/api/v1/ws``); ``gthread`` is gunicorn with
threads (``INTEGRATION_GATEWAY_WORKER_CLASS=gthread``); ``granian`` is granian's WSGI
interface (a Rust HTTP server; the ``bench`` extra). Each runs the same app with the same
process count; the thread servers get the gateway's thread count.
"""

from __future__ import annotations

import gc
import importlib.util
import sys
from typing import Any

from integration.settings import Settings

#: The servers compared, production's first.
SERVERS = ("gevent", "gthread", "granian")


def available(server: str) -> bool:
    return server != "granian" or importlib.util.find_spec("granian") is not None


def gunicorn_options(settings: Settings, server: str) -> list[str]:
    """gunicorn's options for a baseline app under ``server`` (gevent or gthread)."""
    options = ["-w", str(settings.gateway_workers)]
    if server == "gevent":
        return [*options, "-k", "gevent", "--worker-connections",
                str(settings.gateway_worker_connections)]
    return [*options, "-k", "gthread", "--threads", str(settings.gateway_threads)]


def granian_argv(settings: Settings, target: str, port: int) -> list[str]:
    """granian serving the WSGI app factory ``target`` (``module:function``)."""
    return [sys.executable, "-m", "granian", "--interface", "wsgi", "--factory",
            "--workers", str(settings.gateway_workers),
            "--blocking-threads", str(settings.gateway_threads), "--no-ws",
            "--host", "127.0.0.1", "--port", str(port), target]


def gateway_app() -> Any:
    """The gateway as ``integration serve`` builds it in each worker (logging configured,
    the app's start-up objects frozen out of the collector), for servers other than
    gunicorn."""
    from integration.app import get_settings
    from integration.gateway import create_app
    from integration.logs import configure_logging

    settings = get_settings()
    configure_logging(settings)
    app = create_app(settings)
    gc.collect()
    gc.freeze()
    return app
