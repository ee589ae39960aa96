"""The ``integration`` command: ``up``, ``serve``, ``token``, ``dlq``, ``schedule``, ``status``,
``trace``, ``demo``, ``check``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import click

from integration.commands.check import check
from integration.commands.schedule import schedule
from integration.deadletters import DeadLetters
from integration.logs import configure_logging
from integration.security import Revocations, signing_key
from integration.settings import ConfigurationError, get_settings
from integration.store import store_from_settings
from integration.tokens import SERVICE_TOKEN, issue_token, read_token, unverified_claims


@click.group()
@click.version_option(package_name="integration-bus")
def main() -> None:
    """Message bus for self-healing operations."""


main.add_command(check)
main.add_command(schedule)


@main.command()
@click.option("--host", default=None, help="Address to bind (default INTEGRATION_HOST).")
@click.option("--port", type=int, default=None, help="Port (default INTEGRATION_PORT).")
def serve(host: str | None, port: int | None) -> None:
    """Start the HTTP gateway alone under gunicorn (for deployments)."""
    from integration.server import prepare_metrics_dir
    from integration.server import serve as run_server

    settings = prepare_metrics_dir(get_settings())
    configure_logging(settings)
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
@click.option("--flower", is_flag=True, help="Also start Flower (basic auth, printed).")
def up(host: str | None, port: int | None, no_beat: bool, flower: bool) -> None:
    """Start everything for development: Redis (embedded unless configured), gateway, worker
    and beat. Ctrl-C stops every process it started."""
    from integration.devstack import run_stack

    settings = get_settings()
    sys.exit(run_stack(settings, host or settings.host, port or settings.port, beat=not no_beat,
                       flower=flower))


@main.group()
def token() -> None:
    """Issue, revoke and inspect access tokens."""


def _signing_key() -> str:
    try:
        return signing_key(get_settings())
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


@token.command("issue")
@click.option("--sub", "subject", required=True, help="Subject: who the token stands for.")
@click.option("--role", "roles", multiple=True, help="A role (repeat for several).")
@click.option("--ttl", type=click.IntRange(1), default=3600, show_default=True,
              help="Lifetime in seconds.")
@click.option("--service", is_flag=True,
              help="A long-lived service token for senders that cannot refresh (up to "
                   "INTEGRATION_SERVICE_TOKEN_MAX_TTL_SECONDS).")
def token_issue(subject: str, roles: tuple[str, ...], ttl: int, service: bool) -> None:
    """Print a signed token; its jti (for revoking) is in `token inspect`."""
    settings = get_settings()
    limit = settings.service_token_max_ttl_seconds if service else settings.token_max_ttl_seconds
    if ttl > limit:
        hint = "" if service else " (use --service for a long-lived service token)"
        raise click.ClickException(f"--ttl {ttl} exceeds the maximum of {limit} s{hint}")
    click.echo(issue_token(_signing_key(), subject, roles, ttl,
                           algorithm=settings.jwt_algorithm, iss=settings.jwt_issuer,
                           aud=settings.jwt_audience,
                           token_use=SERVICE_TOKEN if service else None))


@token.command("revoke")
@click.argument("jti_or_token")
def token_revoke(jti_or_token: str) -> None:
    """Revoke a token, given its jti or the token itself, in every gateway at once."""
    import jwt

    settings = get_settings()
    jti, expires_at = jti_or_token, None
    if jti_or_token.count(".") == 2:
        try:
            claims = unverified_claims(jti_or_token)
        except jwt.PyJWTError as exc:
            raise click.ClickException(f"not a token: {exc}") from None
        jti, expires_at = str(claims.get("jti", "")), claims.get("exp")
        if not jti:
            raise click.ClickException("the token has no jti, so it cannot be revoked")
    revocations = Revocations(store_from_settings(settings).client, settings.key_prefix,
                              settings.service_token_max_ttl_seconds)
    ttl = revocations.revoke(jti, expires_at)
    click.echo(f"revoked {jti} (kept for {ttl} s)")


@token.command("inspect")
@click.argument("token_text")
def token_inspect(token_text: str) -> None:
    """Verify a token (when this machine has the key) and print its claims."""
    import json

    import jwt

    settings = get_settings()
    try:
        if settings.jwt_algorithm.startswith("HS"):
            claims = read_token(_signing_key(), token_text, settings.jwt_algorithm)
        else:
            claims = unverified_claims(token_text)
            click.echo("(signature not verified: asymmetric keys are checked by the gateway)",
                       err=True)
    except jwt.PyJWTError as exc:
        raise click.ClickException(f"invalid token: {exc}") from None
    click.echo(json.dumps(claims, indent=2, sort_keys=True))


@main.command("status")
@click.argument("message_id")
def status_command(message_id: str) -> None:
    """A message's status record."""
    import json

    from integration.store import store_from_settings

    record = store_from_settings(get_settings()).get(message_id)
    if record is None:
        raise click.ClickException(f"no message {message_id}")
    record.pop("history", None)
    click.echo(json.dumps(record, indent=2, default=str))


@main.command("trace")
@click.argument("message_id")
def trace_command(message_id: str) -> None:
    """A message's timeline and the messages it caused."""
    from integration.store import store_from_settings
    from integration.trace import render, trace

    found = trace(store_from_settings(get_settings()), message_id)
    if found is None:
        raise click.ClickException(f"no message {message_id}")
    click.echo("\n".join(render(found)))


@main.group()
def dlq() -> None:
    """Dead letters: list, show, replay and purge (straight from the store, no HTTP)."""


def _dead_letters() -> DeadLetters:
    from integration.services import build_submitter

    submitter = build_submitter(get_settings(), origin="cli")
    return DeadLetters(submitter.store, submitter.publisher)


def _since(value: datetime | None) -> int | None:
    return int(value.replace(tzinfo=value.tzinfo or UTC).timestamp() * 1000) if value else None


@dlq.command("list")
@click.option("--type", "type_", help="Only this message type.")
@click.option("--since", type=click.DateTime(), help="Accepted at or after (UTC).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
def dlq_list(type_: str | None, since: datetime | None, limit: int) -> None:
    """Newest dead letters first."""
    items, _ = _dead_letters().page(type=type_, since_ms=_since(since), limit=limit)
    for item in items:
        error = item.get("error") or {}
        click.echo(f"{item['id']}  {item['type']:<14} attempts={item.get('attempts', 0)}  "
                   f"{item.get('finished_at', '')}  {error.get('type', '')}: "
                   f"{str(error.get('message', ''))[:60]}")
    click.echo(f"{len(items)} dead letter(s)", err=True)


@dlq.command("show")
@click.argument("message_id")
def dlq_show(message_id: str) -> None:
    """A dead letter with every attempt's error."""
    import json

    record = _dead_letters().get(message_id)
    if record is None:
        raise click.ClickException(f"no dead letter {message_id}")
    record.pop("history", None)
    click.echo(json.dumps(record, indent=2, default=str))


@dlq.command("replay")
@click.argument("message_ids", nargs=-1)
@click.option("--type", "type_", help="Replay every dead letter of this type.")
@click.option("--since", type=click.DateTime(), help="Only those accepted since (UTC).")
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
@click.option("--limit", type=click.IntRange(1), default=10_000, show_default=True)
def dlq_replay(message_ids: tuple[str, ...], type_: str | None, since: datetime | None,
               replay_all: bool, limit: int) -> None:
    """Re-enqueue dead letters by id, or all matching --type/--since (or --all)."""
    letters = _dead_letters()
    if message_ids:
        replayed = letters.replay(list(message_ids), by="cli")
    elif type_ or since or replay_all:
        total, _ = letters.store.count(status="dead", type=type_)
        with click.progressbar(length=min(total, limit), label="replaying") as bar:
            replayed = letters.replay_matching(type=type_, since_ms=_since(since), limit=limit,
                                               by="cli", progress=bar.update)
    else:
        raise click.UsageError("name message ids, or use --type, --since or --all")
    click.echo(f"replayed {len(replayed)} dead letter(s)")


@dlq.command("purge")
@click.option("--type", "type_", help="Only this message type.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(type_: str | None, yes: bool) -> None:
    """Delete dead letters for good."""
    if not yes:
        click.confirm(f"Delete every dead letter{f' of type {type_}' if type_ else ''}?",
                      abort=True)
    click.echo(f"purged {_dead_letters().purge(type=type_)} dead letter(s)")


if __name__ == "__main__":  # pragma: no cover
    main()


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("caused", []) for n in _walk(child))]


def _demo_token(settings: Any) -> str:
    """A short-lived admin token signed with the configured or the development secret."""
    from pathlib import Path

    from integration.devstack import DEV_SECRET_FILE

    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value()
    else:
        path = Path(settings.run_dir) / DEV_SECRET_FILE
        if not path.exists():
            raise click.ClickException(
                "no token: pass --token, set INTEGRATION_JWT_SECRET, or start `make run` "
                "(it writes the development secret) first")
        secret = path.read_text().strip()
    return issue_token(secret, "demo", ["admin"], 600)


@main.command()
@click.option("--url", help="Gateway base URL (default http://INTEGRATION_HOST:INTEGRATION_PORT).")
@click.option("--token", "token_text", envvar="INTEGRATION_TOKEN",
              help="Bearer token (default: a 10-minute admin token signed with the "
                   "configured or development secret).")
@click.option("--host", "host_label", default="demo-host", show_default=True,
              help="The `host` label of the metric (the action's target).")
@click.option("--timeout", type=click.FloatRange(1), default=60, show_default=True,
              help="Seconds to wait for the loop to complete.")
def demo(url: str | None, token_text: str | None, host_label: str, timeout: float) -> None:
    """Send a metric over the shipped HighCPU threshold and follow the self-healing loop
    until its action.result, printing each step as it completes.

    \b
    Example (with `make run` in another terminal):
      integration demo
      integration demo --url http://gateway:8000 --token "$TOKEN"

    Exit status: 0 when the loop completed, 1 when it did not within --timeout.
    """
    import json
    import time
    import urllib.error
    import urllib.request

    from integration.trace import render

    settings = get_settings()
    base = (url or f"http://{settings.host}:{settings.port}").rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise click.ClickException("--url must be an http:// or https:// URL")
    bearer = token_text or _demo_token(settings)

    def call(method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
            base + path, method=method, data=json.dumps(body).encode() if body else None,
            headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise click.ClickException(f"{method} {path}: {exc.code} {exc.read()[:300]!r}"
                                       ) from None
        except OSError as exc:
            raise click.ClickException(f"cannot reach the gateway at {base}: {exc}") from None

    metric = {"type": "metric", "source": "integration-demo",
              "data": {"name": "cpu_usage_percent", "value": 97.5,
                       "labels": {"host": host_label}}}
    message_id = call("POST", "/api/v1/messages", metric)["id"]
    click.echo(f"sent metric cpu_usage_percent=97.5 (host {host_label}): {message_id}")
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = call("GET", f"/api/v1/messages/{message_id}/trace")
        for node in _walk(found):
            key = f"{node['id']}:{node['status']}"
            if key not in seen and node["status"] in ("succeeded", "dead", "held"):
                seen.add(key)
                mark = click.style("✓", fg="green") if node["status"] == "succeeded" \
                    else click.style("✗", fg="red")
                click.echo(f"  {mark} {node['type']:<26} {node['status']:<9} {node['id']}")
        done = [n for n in _walk(found) if n["type"] == "action.result"
                and n["status"] == "succeeded"]
        if done:
            click.echo("\nthe loop completed; its trace:\n")
            click.echo("\n".join(render(found)))
            return
        time.sleep(0.5)
    click.echo("\n".join(render(found)))
    raise click.ClickException(
        f"the loop did not reach action.result within {timeout:.0f} s (are workers running, "
        "and do the rules have the HighCPU threshold?)")
