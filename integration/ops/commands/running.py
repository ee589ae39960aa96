"""Running the service: ``serve`` (the gateway), ``flower`` (the monitor), ``up`` (everything,
for development)."""

from __future__ import annotations

import logging
import os
import sys

import click

from integration import sources
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
@click.option("--flower-port", type=click.IntRange(1, 65535), default=5555, show_default=True,
              help="Flower's port, with --flower.")
def up(host: str | None, port: int | None, no_beat: bool, flower: bool, flower_port: int) -> None:
    """Start everything for development: Redis, gateway, worker and beat.

    Redis is embedded unless INTEGRATION_REDIS_URL is set. Once the gateway answers, prints
    the URLs and a development token. What it started is recorded in the run directory
    (.run/stack.json), so every other `integration` command run from this folder uses this
    stack (`integration env` prints it for other tools). Settings come from the environment,
    then `.env`, except a deployment's keys there (INTEGRATION_REDIS_URL, _BROKER_URL,
    _JWT_SECRET, _ENV), which a development stack ignores. Ctrl-C, SIGTERM or closing the
    terminal stops every process it started.

    \b
    Examples:
      integration up
      integration up --port 8080 --no-beat
      integration up --flower                 # also Flower, with a printed password
      make run PORT=8080 METRICS_PORT=9811
    """
    from integration.ops.devstack import check_ports, run_stack, stack_ports
    from integration.settings import DevStackSettings

    settings = DevStackSettings()
    in_dotenv = sources.dotenv_values(sources.env_file())
    for name in sources.DEPLOYMENT_KEYS:
        if name not in os.environ and name in in_dotenv:
            logging.getLogger(__name__).warning(
                "%s in %s is ignored: a development stack makes its own (export it to use it)",
                name, sources.env_file())
    # What would otherwise fail in each process it starts, again and again: one line now.
    check_stack(settings)
    try:
        check_ports(stack_ports(settings, host or settings.host, port or settings.port, flower,
                                flower_port))
        code = run_stack(settings, host or settings.host, port or settings.port,
                         beat=not no_beat, flower=flower, flower_port=flower_port)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@click.command("env")
@click.option("--json", "as_json", is_flag=True, help="The record as one JSON object.")
def env_command(as_json: bool) -> None:
    """Print the running `make run` stack's settings as shell exports.

    Every `integration` command run from this folder already uses them; this is for other
    tools and other folders. The JWT secret is read from its file when the line runs, never
    printed.

    \b
    Examples:
      eval "$(integration env)"
      integration env --json

    Exit status: 1 when no stack runs from this folder.
    """
    import json
    import shlex

    record = sources.recorded_stack()
    if record is None:
        raise click.ClickException(
            f"no stack runs from this folder (no live {sources.run_dir() / sources.STACK_FILE}):"
            " start one with `make run`")
    if as_json:
        from dataclasses import asdict

        click.echo(json.dumps(asdict(record), indent=2))
        return
    values = {k: v for k, v in record.settings().items() if k != "INTEGRATION_JWT_SECRET"}
    for name, value in values.items():
        click.echo(f"export {name}={shlex.quote(value)}")
    if record.jwt_secret_file:
        click.echo(f'export INTEGRATION_JWT_SECRET="$(cat {shlex.quote(record.jwt_secret_file)})"')
    click.echo(f"# gateway {record.gateway_url}, started by process {record.pid}")


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
