"""The HTTP gateway: authenticate, validate, enqueue; read status. ``create_app`` wires it."""

from __future__ import annotations

from flask import Blueprint, Flask, Response
from prometheus_client import CollectorRegistry
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import (
    GunicornInternalPrometheusMetrics,
    GunicornPrometheusMetrics,
)
from spectree import SecurityScheme, SecuritySchemeData, SpecTree
from spectree.models import SecureType
from werkzeug.middleware.proxy_fix import ProxyFix

from integration.app import default_registry, get_settings
from integration.gateway import (
    breakers,
    held,
    me,
    messagetypes,
    queues,
    reads,
    submit,
    tokens,
)
from integration.gateway.alertmanager import create_alertmanager_api
from integration.gateway.api import Register, create_api, nested
from integration.gateway.auth import init_auth
from integration.gateway.console import console
from integration.gateway.deadletters import create_dead_letters_api
from integration.gateway.docs import SWAGGER_PAGE, docs
from integration.gateway.errors import register_errorhandlers
from integration.gateway.health import health
from integration.gateway.jsonprovider import FastJSONProvider
from integration.gateway.limits import init_limiter, security_headers
from integration.gateway.metrics import EXTENSION_KEY as METRICS_KEY
from integration.gateway.metrics import GatewayMetrics
from integration.gateway.openapi import document_answers
from integration.gateway.requestlog import init_request_log
from integration.gateway.runtime import Runtime
from integration.gateway.schedules import create_schedules_api
from integration.gateway.schemas import ProblemDocument
from integration.gateway.subscriptions import create_subscriptions_api
from integration.gateway.ws import init_websocket
from integration.settings import Settings
from integration.version import __version__

API_TITLE = "Integration bus API"
#: The resources of ``/api/v1``, each adding its views to the API blueprint.
API_RESOURCES: tuple[Register, ...] = (
    submit.register,          # POST /messages: one, a batch, CloudEvents
    reads.register,           # GET /messages, /messages/<id>, /messages/<id>/trace
    messagetypes.register,    # GET /types
    held.register,            # POST /messages/<id>/release, /messages/<id>/drop
    breakers.register,        # GET /breakers, POST /breakers/<name>/reset
    queues.register,          # GET /queues: depths and live workers
    me.register,              # GET /me: the caller's roles and grants
    tokens.register,          # DELETE /tokens/<jti>, POST /tokens/revocations
    nested(create_dead_letters_api),
    nested(create_subscriptions_api),
    nested(create_alertmanager_api),
    nested(create_schedules_api),
)


def create_app(settings: Settings | None = None) -> Flask:
    """Build a gateway app; tests pass their own settings, servers read the environment."""
    settings = settings or get_settings()
    app = Flask(__name__)
    configure(app, settings)
    init_request_log(app)
    runtime = Runtime.build(settings)
    runtime.init_app(app)
    init_auth(app, runtime.verification, runtime.revocations, runtime.policy)
    api = register_blueprints(app)
    init_limiter(app, settings, api, init_websocket(app),
                 submit_counts=runtime.submitter.counts_limits)
    register_errorhandlers(app)
    register_metrics(app, settings)
    app.after_request(security_headers)
    return app


def configure(app: Flask, settings: Settings) -> None:
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes  # 413 before parsing
    app.json = FastJSONProvider(app)
    if settings.proxy_hops:
        # Behind a reverse proxy the client address is in X-Forwarded-For (rate limits).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops,  # type: ignore[method-assign]
                                x_proto=settings.proxy_hops)


def register_blueprints(app: Flask) -> Blueprint:
    spec = SpecTree(
        "flask", title=API_TITLE, version=__version__, path="docs", mode="strict",
        page_templates={"swagger": SWAGGER_PAGE},
        naming_strategy=lambda model: model.__name__,
        nested_naming_strategy=lambda _parent, child: child,
        validation_error_model=ProblemDocument,
        security_schemes=[SecurityScheme(name="bearer", data=SecuritySchemeData(
            type=SecureType.HTTP, scheme="bearer", bearer_format="JWT"))],
        security={"bearer": []},
    )
    api = create_api()
    for register in API_RESOURCES:
        register(api, spec)
    app.register_blueprint(api)
    app.register_blueprint(health)
    app.register_blueprint(docs)
    app.register_blueprint(console)
    spec.register(app)
    with app.app_context():  # every route is in place: the document is built once, here
        document_answers(spec.spec)
    app.add_url_rule("/openapi.json", "openapi", lambda: app.json.response(spec.spec))
    return api


def register_metrics(app: Flask, settings: Settings) -> PrometheusMetrics:
    """HTTP metrics labelled by route rule (never by message id).

    Under gunicorn (``PROMETHEUS_MULTIPROC_DIR`` set by ``integration serve``) the worker
    processes' metrics are aggregated; they are served on ``/metrics``, or only on
    ``INTEGRATION_GATEWAY_METRICS_PORT`` of the gunicorn master when that is set.
    """
    # A WebSocket's "request" lasts as long as the socket: it would swamp the latency buckets.
    options = {"group_by": "url_rule", "defaults_prefix": "integration_gateway",
               "excluded_paths": ["^/api/v1/ws$"]}
    metrics: PrometheusMetrics
    if settings.prometheus_multiproc_dir:
        metrics = (GunicornPrometheusMetrics(app, **options) if settings.gateway_metrics_port
                   else GunicornInternalPrometheusMetrics(app, **options))
        own_registry = None  # multiprocess: values go to the shared files, summed on scrape
    else:
        own_registry = CollectorRegistry()
        metrics = PrometheusMetrics(app, path=None if settings.gateway_metrics_port
                                    else "/metrics", registry=own_registry, **options)
    app.extensions[METRICS_KEY] = GatewayMetrics(own_registry, default_registry())
    return metrics


__all__ = ["create_app", "Response"]
