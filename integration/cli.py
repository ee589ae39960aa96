"""The ``integration`` command: ``up``, ``serve`` and ``token``."""

from __future__ import annotations

import sys

import click

from integration.settings import ConfigurationError, get_settings
from integration.tokens import issue_token, read_token


@click.group()
@click.version_option(package_name="integration-bus")
def main() -> None:
    """Message bus for self-healing operations."""


@main.command()
@click.option("--host", default=None, help="Address to bind (default INTEGRATION_HOST).")
@click.option("--port", type=int, default=None, help="Port (default INTEGRATION_PORT).")
def serve(host: str | None, port: int | None) -> None:
    """Start the HTTP gateway alone under gunicorn (for deployments)."""
    from integration.server import serve as run_server

    settings = get_settings()
    try:
        # Fail here, with the reason, rather than in every gunicorn worker.
        from integration.gateway import create_app

        create_app(settings)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    run_server(settings, host or settings.host, port or settings.port)


@main.command()
@click.option("--host", default=None, help="Gateway address (default INTEGRATION_HOST).")
@click.option("--port", type=int, default=None, help="Gateway port (default INTEGRATION_PORT).")
@click.option("--no-beat", is_flag=True, help="Do not start Celery beat.")
def up(host: str | None, port: int | None, no_beat: bool) -> None:
    """Start everything for development: Redis (embedded unless configured), gateway, worker
    and beat. Ctrl-C stops every process it started."""
    from integration.devstack import run_stack

    settings = get_settings()
    sys.exit(run_stack(settings, host or settings.host, port or settings.port, beat=not no_beat))


@main.group()
def token() -> None:
    """Issue and inspect access tokens."""


def _secret() -> str:
    settings = get_settings()
    if settings.jwt_secret is None or not settings.jwt_secret.get_secret_value():
        raise click.ClickException("INTEGRATION_JWT_SECRET is not set.")
    return settings.jwt_secret.get_secret_value()


@token.command("issue")
@click.option("--sub", "subject", required=True, help="Subject: who the token stands for.")
@click.option("--role", "roles", multiple=True, help="A role (repeat for several).")
@click.option("--ttl", type=click.IntRange(1), default=3600, show_default=True,
              help="Lifetime in seconds.")
def token_issue(subject: str, roles: tuple[str, ...], ttl: int) -> None:
    """Print a token signed with INTEGRATION_JWT_SECRET."""
    click.echo(issue_token(_secret(), subject, roles, ttl))


@token.command("inspect")
@click.argument("token_text")
def token_inspect(token_text: str) -> None:
    """Verify a token and print its claims."""
    import json

    import jwt

    try:
        claims = read_token(_secret(), token_text)
    except jwt.PyJWTError as exc:
        raise click.ClickException(f"invalid token: {exc}") from None
    click.echo(json.dumps(claims, indent=2, sort_keys=True))


if __name__ == "__main__":  # pragma: no cover
    main()
