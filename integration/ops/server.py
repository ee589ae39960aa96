"""Run the gateway under gunicorn (gevent workers; SIGTERM finishes in-flight requests)."""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from integration import tracing
from integration.settings import ConfigurationError, Settings

log = logging.getLogger(__name__)


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

            host, port = settings.gateway_metrics_host, settings.gateway_metrics_port
            try:
                GunicornPrometheusMetrics.start_http_server_when_ready(port, host)
            except OSError as exc:  # before any worker starts: the gateway exits 1
                raise PortUnavailable(
                    f"cannot listen on {host}:{port} for the gateway's metrics: "
                    f"{exc.strerror or exc}; stop what listens there, or choose another port "
                    "with INTEGRATION_GATEWAY_METRICS_PORT") from None
    return when_ready


def _start_tracing(settings: Settings) -> Any:
    def post_worker_init(worker: Any) -> None:
        """Each worker process makes its own tracer after the fork (the span exporter's
        thread does not survive one), and after gevent's patching, so that thread is a
        greenlet of that process."""
        tracing.configure(settings, "integration-gateway")
    return post_worker_init


def _worker_exit(server: Any, worker: Any) -> None:
    tracing.shutdown()  # export the spans still pending


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


def reuse_port(settings: Settings) -> bool:
    """Whether each worker process listens on the port itself (SO_REUSEPORT).

    With one listening socket shared by the processes, whichever process wakes first accepts
    a burst of new connections, and a keep-alive connection stays with the process that
    accepted it: measured here, a client pool of 32 connections often landed entirely on
    one of two processes, which then ran at one core while the other idled. With a socket
    per process, the kernel spreads connections across them by their addresses. Linux only:
    elsewhere SO_REUSEPORT does not balance. One process has nothing to spread."""
    return (settings.gateway_reuse_port and sys.platform.startswith("linux")
            and settings.gateway_workers > 1)


class PortUnavailable(ConfigurationError):
    """The gateway's address is taken by another listener."""


def claim_port(host: str, port: int, attempts: int = 5, pause: float = 1.0) -> None:
    """Fail unless ``host:port`` is free to listen on.

    With a socket per process, every socket sets SO_REUSEPORT, so a second gateway started
    by the same user on a port in use would bind beside the first and take part of its
    connections instead of failing. A plain socket (no SO_REUSEPORT) cannot bind there, so
    binding one first refuses such a port, as gunicorn's own shared socket would. Like
    gunicorn, it tries a few times, a second apart, for a previous instance still closing."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    for attempt in range(attempts):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
                return
            except OSError as exc:
                if attempt == attempts - 1:
                    raise PortUnavailable(
                        f"cannot listen on {host}:{port}: {exc.strerror or exc}; stop what "
                        "listens there, or choose another port with --port or "
                        "INTEGRATION_PORT") from None
        time.sleep(pause)


def serve(settings: Settings, host: str, port: int) -> None:
    spread = reuse_port(settings)
    if spread:
        claim_port(host, port)
        # gunicorn's own "Listening at" line is empty then: the master holds no socket.
        log.info("each of the %d worker processes listens on %s:%d (SO_REUSEPORT)",
                 settings.gateway_workers, host, port)
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
        "post_worker_init": _start_tracing(settings),
        "worker_exit": _worker_exit,
        "reuse_port": spread,
    }
    GatewayServer(settings, options).run()
