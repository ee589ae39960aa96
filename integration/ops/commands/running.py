"""Running the service: ``serve`` (the gateway), ``flower`` (the monitor), ``up`` (everything,
for development)."""

from __future__ import annotations

import sys

import click

from integration.app import get_settings, load_schedules, ping_store
from integration.logs import configure_logging
from integration.settings import ConfigurationError, Settings


@click.command()
@click.option("--host", default=None, help="Address to bind (default INTEGRATION_HOST).")
@click.option("--port", type=int, default=None, help="Port (default INTEGRATION_PORT).")
def serve(host: str | None, port: int | None) -> None:
    """Run the HTTP gateway alone under gunicorn (for deployments).

    Gevent workers (INTEGRATION_GATEWAY_WORKERS); SIGTERM stops accepting connections,
    finishes requests in flight within INTEGRATION_GRACEFUL_TIMEOUT_SECONDS, closes
    WebSockets with 1001 and exits 0.

    \b
    Examples:
      integration serve
      integration serve --host 0.0.0.0 --port 8080
      INTEGRATION_GATEWAY_WORKERS=4 integration serve
    """
    from integration.ops.server import PortUnavailable, prepare_metrics_dir
    from integration.ops.server import serve as run_server

    settings = prepare_metrics_dir(get_settings())
    configure_logging(settings)
    try:
        # Fail here, with the reason, rather than in every gunicorn worker.
        from integration.gateway import create_app

        create_app(settings)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    ping_store(settings)  # an unreachable Redis or a wrong password: the group's one line
    try:
        run_server(settings, host or settings.host, port or settings.port)
    except PortUnavailable as exc:
        raise click.ClickException(str(exc)) from None


@click.command("flower", context_settings={"ignore_unknown_options": True})
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(flower_args: tuple[str, ...]) -> None:
    """Run Flower, Celery's monitor, on the workers, behind a login.

    Takes Flower's own options. The login comes from --basic-auth or FLOWER_BASIC_AUTH
    (user:password) and is required; it also guards /metrics, which Flower itself serves
    to anyone. Production refuses a placeholder or low-entropy password.

    \b
    Examples:
      FLOWER_BASIC_AUTH="admin:$(openssl rand -base64 48)" integration flower --port=5555
      integration flower --port=5555 --address=0.0.0.0 --basic-auth=admin:…
    """
    import logging

    from integration.ops.flowerserver import check_login, run_flower

    try:
        weak = check_login(flower_args, get_settings())
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    for reason in weak:
        logging.getLogger(__name__).warning("%s; INTEGRATION_ENV=production refuses it", reason)
    run_flower(flower_args)


@click.command()
@click.option("--host", default=None, help="Gateway address (default INTEGRATION_HOST).")
@click.option("--port", type=int, default=None, help="Gateway port (default INTEGRATION_PORT).")
@click.option("--no-beat", is_flag=True, help="Do not start Celery beat.")
@click.option("--flower", is_flag=True, help="Also start Flower (basic auth, printed).")
def up(host: str | None, port: int | None, no_beat: bool, flower: bool) -> None:
    """Start everything for development: Redis, gateway, worker and beat.

    Redis is embedded unless INTEGRATION_REDIS_URL is set; prints the URLs and a development
    token. Ctrl-C stops every process it started.

    \b
    Examples:
      integration up
      integration up --port 8080 --no-beat
      integration up --flower                 # also Flower, with a printed password
    """
    from integration.ops.devstack import run_stack
    from integration.ops.server import claim_port

    settings = get_settings()
    # What would otherwise fail in each process it starts, again and again: one line now.
    check_stack(settings)
    claim_port(host or settings.host, port or settings.port, attempts=1)
    sys.exit(run_stack(settings, host or settings.host, port or settings.port, beat=not no_beat,
                       flower=flower))



def check_stack(settings: Settings) -> None:
    """What ``up``'s processes load at start: a Redis it did not start (answering, with the
    password of its URL), the message types, and the policy, rules and schedule files.
    Raises the error of the first that fails (the group words it)."""
    from integration.app import default_registry
    from integration.loop.rules import load_rules
    from integration.security.policy import load_policy

    if "redis_url" in settings.model_fields_set:
        ping_store(settings)
    default_registry()
    load_policy(settings.policy_file)
    load_rules(settings.rules_file)
    load_schedules(settings.schedule_file)
