"""The HTTP gateway: authenticate, validate, enqueue; read status. ``create_app`` wires it."""

from __future__ import annotations

from flask import Flask, Response, redirect
from prometheus_client import CollectorRegistry
from prometheus_flask_exporter import PrometheusMetrics
from spectree import SecurityScheme, SecuritySchemeData, SpecTree
from spectree.models import SecureType

from integration import __version__
from integration.gateway.api import create_api
from integration.gateway.auth import init_auth
from integration.gateway.errors import register_errorhandlers
from integration.gateway.health import health
from integration.gateway.runtime import Runtime
from integration.gateway.schemas import ProblemDocument
from integration.settings import Settings, get_settings

API_TITLE = "Integration bus API"


def create_app(settings: Settings | None = None) -> Flask:
    """Build a gateway app; tests pass their own settings, servers read the environment."""
    settings = settings or get_settings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    runtime = Runtime.build(settings)
    runtime.init_app(app)
    init_auth(app, runtime.verification, runtime.revocations, runtime.policy)
    register_blueprints(app)
    register_errorhandlers(app)
    register_metrics(app)
    return app


def register_blueprints(app: Flask) -> None:
    spec = SpecTree(
        "flask", title=API_TITLE, version=__version__, path="docs", mode="strict",
        naming_strategy=lambda model: model.__name__,
        nested_naming_strategy=lambda _parent, child: child,
        validation_error_model=ProblemDocument,
        security_schemes=[SecurityScheme(name="bearer", data=SecuritySchemeData(
            type=SecureType.HTTP, scheme="bearer", bearer_format="JWT"))],
        security={"bearer": []},
    )
    app.register_blueprint(create_api(spec))
    app.register_blueprint(health)
    spec.register(app)
    app.add_url_rule("/openapi.json", "openapi", lambda: app.json.response(spec.spec))
    app.add_url_rule("/docs", "docs", lambda: redirect("/docs/swagger/"))


def register_metrics(app: Flask) -> PrometheusMetrics:
    """HTTP metrics on ``/metrics``, labelled by route rule (never by message id)."""
    return PrometheusMetrics(app, registry=CollectorRegistry(), group_by="url_rule",
                             defaults_prefix="integration_gateway")


__all__ = ["create_app", "Response"]
