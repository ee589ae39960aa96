"""Run the gateway under gunicorn (threads per worker; SIGTERM finishes in-flight requests)."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from integration.settings import Settings


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

        return create_app(self.settings)


def serve(settings: Settings, host: str, port: int) -> None:
    options = {
        "bind": f"{host}:{port}",
        "workers": settings.gateway_workers,
        "worker_class": "gthread",
        "threads": settings.gateway_threads,
        "graceful_timeout": settings.graceful_timeout_seconds,
        "timeout": 60,
        "accesslog": "-",
        "errorlog": "-",
        # Build the app in each worker so no Redis connection is shared across a fork.
        "preload_app": False,
        # No control socket in the home directory: several gateways may run on one host.
        "control_socket_disable": True,
    }
    GatewayServer(settings, options).run()
