"""Run the gateway under gunicorn (gevent workers; SIGTERM finishes in-flight requests)."""

from __future__ import annotations

import gc
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from integration.settings import Settings


def prepare_metrics_dir(settings: Settings) -> Settings:
    """Give gunicorn's processes a shared, empty metrics directory.

    prometheus_client picks its multiprocess mode when it is first imported, so this runs
    before anything imports it; the variable is inherited by every forked worker.
    """
    directory = Path(settings.prometheus_multiproc_dir
                     or tempfile.mkdtemp(prefix="integration-gateway-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):  # counters of a previous run must not add up
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    from prometheus_client import values  # in case something imported it already

    values.ValueClass = values.get_value_class()
    return settings.model_copy(update={"prometheus_multiproc_dir": str(directory)})


class StructuredLogger(glogging.Logger):
    """Gunicorn's own messages go to the root logger, in the service's structured shape; the
    per-request line comes from the app (with the correlation id, never the token)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            logger.handlers = []
            logger.propagate = True


class GatewayServer(BaseApplication):
    """Gunicorn with the gateway app, configured from settings instead of a config file."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings:  # settings newer than the installed gunicorn are skipped
                self.cfg.set(key, value)

    def load(self) -> Any:
        from integration.gateway import create_app

        app = create_app(self.settings)
        # The app's ~90k long-lived objects (modules, models, routes) would be scanned by
        # every full collection: a 70 ms pause of every request of the process. Frozen, they
        # are left out, and a full collection scans only what requests left behind.
        gc.collect()
        gc.freeze()
        return app


def _when_ready(settings: Settings) -> Any:
    def when_ready(server: Any) -> None:
        if settings.gateway_metrics_port:
            from prometheus_flask_exporter.multiprocess import GunicornPrometheusMetrics

            GunicornPrometheusMetrics.start_http_server_when_ready(
                settings.gateway_metrics_port, settings.gateway_metrics_host)
    return when_ready


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_flask_exporter.multiprocess import GunicornPrometheusMetrics

    GunicornPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)


def _gevent_worker() -> type:
    """Gunicorn's gevent worker, which also closes open WebSockets (1001) on SIGTERM (they
    would otherwise hold the worker until the graceful timeout) and ends keep-alive
    connections with the response in flight, so no client sends its next request to a
    worker that is about to close the connection under it."""
    from gunicorn.workers.ggevent import GeventWorker

    class GatewayWorker(GeventWorker):
        gateway_app: Any = None

        def load_wsgi(self) -> None:
            super().load_wsgi()
            self.gateway_app = app = getattr(self, "wsgi")  # noqa: B009 - untyped in gunicorn
            self.wsgi = self.closing_when_stopped(app)

        def closing_when_stopped(self, app: Any) -> Any:
            def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
                def start(status: str, headers: list[tuple[str, str]],
                          exc_info: Any = None) -> Any:
                    # Gunicorn decides keep-alive when a request arrives; a request still
                    # being answered after SIGTERM must say "Connection: close" too.
                    force_close = getattr(getattr(start_response, "__self__", None),
                                          "force_close", None)
                    if not self.alive and force_close is not None:
                        force_close()
                    return start_response(status, headers, exc_info)
                return app(environ, start)
            return wsgi

        def patch(self) -> None:
            # The master imported ssl (settings, gunicorn) before forking. The modules gevent
            # names for it (jwt.jwks_client, redis.asyncio) use the unpatched name only as a
            # type or not at all, so the warning would only alarm operators.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Monkey-patching ssl after ssl")
                super().patch()

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            import gevent

            from integration.gateway.ws import going_away

            # Out of the signal handler, where nothing may block (as gunicorn's handle_quit).
            gevent.spawn(going_away, self.gateway_app)

    return GatewayWorker


def worker_options(settings: Settings) -> dict[str, Any]:
    """gevent by default: an open WebSocket is a greenlet, not one of a fixed set of threads,
    so hundreds of idle sockets leave HTTP requests their full capacity."""
    if settings.gateway_worker_class == "gthread":
        return {"worker_class": "gthread", "threads": settings.gateway_threads}
    return {"worker_class": _gevent_worker(),
            "worker_connections": settings.gateway_worker_connections}


def serve(settings: Settings, host: str, port: int) -> None:
    options = {
        "bind": f"{host}:{port}",
        "workers": settings.gateway_workers,
        **worker_options(settings),
        "graceful_timeout": settings.graceful_timeout_seconds,
        "timeout": 60,
        "accesslog": None,
        "errorlog": "-",
        "logger_class": StructuredLogger,
        # Build the app in each worker so no Redis connection is shared across a fork.
        "preload_app": False,
        # No control socket in the home directory: several gateways may run on one host.
        "control_socket_disable": True,
        "when_ready": _when_ready(settings),
        "child_exit": _child_exit,
    }
    GatewayServer(settings, options).run()
