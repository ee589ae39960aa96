"""The ``integration`` command: ``up``, ``serve``, ``flower``, ``token``, ``dlq``, ``schedule``,
``status``, ``trace``, ``demo``, ``check``."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click

from integration.app import get_settings
from integration.logs import configure_logging
from integration.ops.check import check
from integration.ops.schedule_commands import schedule
from integration.ops.terminal import attempt_lines, paint_status, record_summary, table
from integration.security.tokens import SERVICE_TOKEN, issue_token, read_token, unverified_claims
from integration.security.verification import Revocations, signing_key
from integration.settings import ConfigurationError
from integration.store.records import public, store_from_settings
from integration.worker.deadletters import DeadLetters


class CommandGroup(click.Group):
    """The ``integration`` group: an unreachable Redis or an invalid setting is one line on
    stderr and exit status 1, in every command, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from pydantic import ValidationError
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            return super().invoke(ctx)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # redis-py names host and port, never the password of the URL.
            reason = " ".join(str(exc).split()).rstrip(".")
            raise click.ClickException(f"cannot reach Redis: {reason}; check that it runs "
                                       "and INTEGRATION_REDIS_URL") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            name = "INTEGRATION_" + "_".join(str(part) for part in first["loc"]).upper()
            raise click.ClickException(f"invalid setting {name}: {first['msg']}") from None


def _no_colour(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value:
        ctx.color = False


#: ``--no-color`` on a command as well as on the group (``integration status ID --no-color``).
no_color_option = click.option("--no-color", is_flag=True, expose_value=False,
                               is_eager=True, callback=_no_colour,
                               help="Plain output without colours.")


@click.group(cls=CommandGroup)
@click.option("--no-color", is_flag=True,
              help="Plain output without colours (also when NO_COLOR is set or the output is "
                   "not a terminal).")
@click.version_option(package_name="integration-bus")
@click.pass_context
def main(ctx: click.Context, no_color: bool) -> None:
    """Message bus for self-healing operations.

    \b
    Examples:
      integration up                          # everything, for development
      integration status 3f2a9c…              # how is my message doing?
      integration trace 3f2a9c…               # what happened, step by step
      integration dlq list --type action      # what ended dead
      integration COMMAND --help              # more on one command

    \b
    Exit status:
      0  done
      1  failed: not found, refused, Redis or the gateway unreachable
      2  usage error: an unknown command, option or value
    """
    from contextlib import suppress

    from pydantic import ValidationError

    # An invalid setting is left to the command: `check` lists them all, others name one.
    with suppress(ValidationError):
        no_color = no_color or bool(get_settings().no_color)
    if no_color:
        ctx.color = False  # inherited by every subcommand's context


main.add_command(check)
main.add_command(schedule)


@main.command()
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
    try:
        run_server(settings, host or settings.host, port or settings.port)
    except PortUnavailable as exc:
        raise click.ClickException(str(exc)) from None


@main.command("flower", context_settings={"ignore_unknown_options": True})
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


@main.command()
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

    settings = get_settings()
    sys.exit(run_stack(settings, host or settings.host, port or settings.port, beat=not no_beat,
                       flower=flower))


#: Moments the CLI reads: with an offset (``Z`` or ``+02:00``), or without one (UTC).
_MOMENT_FORMATS = ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]


@main.group()
def token() -> None:
    """Issue, revoke and inspect access tokens (JWT).

    \b
    Examples:
      integration token issue --sub alertmanager --role monitoring --service --ttl 31536000
      integration token inspect "$TOKEN"
      integration token revoke "$TOKEN"
      integration token revoke --subject alice
    """


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
    """Print a signed token for a subject and its roles.

    Its jti (for revoking) is shown by `token inspect`.

    \b
    Examples:
      integration token issue --sub alice --role operator
      integration token issue --sub ci --role admin --ttl 600
      integration token issue --sub prometheus --role monitoring --service --ttl 31536000
    """
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
@click.argument("jti_or_token", required=False)
@click.option("--subject", help="Revoke every token of this subject issued at or before "
                                "--before (with or without a jti).")
@click.option("--before", type=click.DateTime(_MOMENT_FORMATS),
              help="With --subject: tokens issued at or before this moment (UTC unless it "
                   "has an offset; default: now).")
def token_revoke(jti_or_token: str | None, subject: str | None,
                 before: datetime | None) -> None:
    """Revoke a token (by jti or text) or all tokens of a subject, everywhere.

    A token without a jti (common from identity providers) is revoked through its subject:
    every token of that subject issued at or before its iat. Revoking a subject also stops
    the schedules and webhook subscriptions it made before the moment.

    \b
    Examples:
      integration token revoke "$TOKEN"
      integration token revoke 0b8e6a52c1f14d0c9d0f3b1a2e7c4d55   # a jti
      integration token revoke --subject alice
      integration token revoke --subject alice --before 2026-01-31T08:00:00Z
    """
    import time

    import jwt

    if (jti_or_token is None) == (subject is None):
        raise click.UsageError("give a jti or a token, or --subject (one of them)")
    if before is not None and subject is None:
        raise click.UsageError("--before goes with --subject")
    settings = get_settings()
    revocations = Revocations(store_from_settings(settings).client, settings.key_prefix,
                              settings.service_token_max_ttl_seconds)
    if subject is not None:
        at = _utc(before).timestamp() if before is not None else None
        if at is not None and at > time.time():
            raise click.ClickException("--before is in the future: a revocation covers "
                                       "tokens already issued")
        moment = revocations.revoke_subject(subject, at)
        click.echo(f"revoked every token of {subject!r} issued at or before "
                   f"{_iso(moment)}")
        return
    assert jti_or_token is not None
    jti: Any = jti_or_token
    expires_at: Any = None
    if jti_or_token.count(".") == 2:
        try:
            claims = unverified_claims(jti_or_token)
        except jwt.PyJWTError as exc:
            raise click.ClickException(f"not a token: {exc}") from None
        jti, expires_at = claims.get("jti"), claims.get("exp")
        if not isinstance(jti, str) or not jti:
            owner, issued = claims.get("sub"), claims.get("iat")
            if not isinstance(owner, str) or not owner:
                raise click.ClickException("the token has neither a jti nor a subject")
            moment = revocations.revoke_subject(
                owner, float(issued) if isinstance(issued, int | float) else None)
            click.echo(f"the token has no jti: revoked every token of {owner!r} issued at or "
                       f"before {_iso(moment)}")
            return
    ttl = revocations.revoke(jti, expires_at if isinstance(expires_at, int) else None)
    click.echo(f"revoked {jti} (kept for {ttl} s)")


def _utc(moment: datetime) -> datetime:
    """A moment given without an offset is UTC (the service's logs and records are)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@token.command("inspect")
@click.argument("token_text")
def token_inspect(token_text: str) -> None:
    """Verify a token (when this machine has the key) and print its claims as JSON.

    Exits 1 when the token is invalid or expired.

    \b
    Examples:
      integration token inspect "$TOKEN"
      integration token inspect "$TOKEN" | jq .roles
    """
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
@click.option("--json", "as_json", is_flag=True, help="The whole record (and history) as JSON.")
@no_color_option
def status_command(message_id: str, as_json: bool) -> None:
    """Show a message's status: type, status, attempts, times and error.

    Exits 1 when there is no message with this id (never accepted, or expired after
    INTEGRATION_STATUS_TTL_SECONDS).

    \b
    Examples:
      integration status 3f2a9c0e4b5d4e8f9a1b2c3d4e5f6a7b
      integration status 3f2a9c0e4b5d4e8f9a1b2c3d4e5f6a7b --json | jq -r .status
    """
    record = store_from_settings(get_settings()).get(message_id)
    if record is None:
        raise _not_found(message_id)
    if as_json:
        click.echo(json.dumps(public(record), indent=2, default=str))
        return
    click.echo("\n".join(record_summary(record)))
    steps = len(record.get("history", []))
    click.echo(click.style(f"{steps} step(s) recorded; `integration trace {message_id}` "
                           "shows them", dim=True))


def _not_found(message_id: str) -> click.ClickException:
    return click.ClickException(f"no message with id {message_id!r} (never accepted, or "
                                "expired after INTEGRATION_STATUS_TTL_SECONDS)")


@main.command("trace")
@click.argument("message_id")
@click.option("--json", "as_json", is_flag=True, help="The trace as JSON.")
@no_color_option
def trace_command(message_id: str, as_json: bool) -> None:
    """Show a message's timeline and the messages it caused, as a tree.

    Each step shows the time since the one before; each message its status and how long it
    took from acceptance to its last step. Exits 1 when there is no message with this id.

    \b
    Examples:
      integration trace 3f2a9c0e4b5d4e8f9a1b2c3d4e5f6a7b
      integration trace 3f2a9c0e4b5d4e8f9a1b2c3d4e5f6a7b --json | jq '.caused[].type'
    """
    from integration.store.trace import render, trace

    found = trace(store_from_settings(get_settings()), message_id)
    if found is None:
        raise _not_found(message_id)
    if as_json:
        click.echo(json.dumps(found, indent=2, default=str))
        return
    click.echo("\n".join(render(found, paint=paint_status)))


@main.group()
def dlq() -> None:
    """Dead letters: list, show, replay and purge.

    Straight from Redis, no HTTP: run it where INTEGRATION_REDIS_URL reaches the store.

    \b
    Examples:
      integration dlq list
      integration dlq show 3f2a9c0e4b5d4e8f9a1b2c3d4e5f6a7b
      integration dlq replay --type action
      integration dlq purge --type metric --yes
    """


def _dead_letters() -> DeadLetters:
    from integration.app import build_submitter

    submitter = build_submitter(get_settings(), origin="cli")
    return DeadLetters(submitter.store, submitter.publisher)


def _since(value: datetime | None) -> int | None:
    return int(value.replace(tzinfo=value.tzinfo or UTC).timestamp() * 1000) if value else None


@dlq.command("list")
@click.option("--type", "type_", help="Only this message type.")
@click.option("--since", type=click.DateTime(), help="Accepted at or after (UTC).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The records as a JSON array.")
@no_color_option
def dlq_list(type_: str | None, since: datetime | None, limit: int, as_json: bool) -> None:
    """List dead letters as a table, newest first.

    \b
    Examples:
      integration dlq list
      integration dlq list --type action --since 2026-01-31T08:00:00
      integration dlq list --json | jq -r '.[].id'
    """
    items, _ = _dead_letters().page(type=type_, since_ms=_since(since), limit=limit)
    if as_json:
        click.echo(json.dumps([public(item) for item in items], indent=2, default=str))
        return
    if items:
        rows = [[str(item["id"]), str(item.get("type", "")), str(item.get("attempts", 0)),
                 str(item.get("finished_at", "")), _error_text(item.get("error"))]
                for item in items]
        click.echo("\n".join(table(["ID", "TYPE", "ATTEMPTS", "FINISHED", "ERROR"], rows,
                                   {4: lambda text: click.style(text, fg="red")})))
    click.echo(f"{len(items)} dead letter(s)", err=True)


def _error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return ""
    return f"{error.get('type', '')}: {str(error.get('message', ''))[:60]}"


@dlq.command("show")
@click.argument("message_id")
@click.option("--json", "as_json", is_flag=True, help="The record as JSON.")
@no_color_option
def dlq_show(message_id: str, as_json: bool) -> None:
    """Show a dead letter with every attempt's error.

    Exits 1 when the message is not a dead letter (unknown, or not dead).

    \b
    Examples:
      integration dlq show 3f2a9c0e4b5d4e8f9a1b2c3d4e5f6a7b
      integration dlq show 3f2a9c0e4b5d4e8f9a1b2c3d4e5f6a7b --json | jq .attempt_errors
    """
    record = _dead_letters().get(message_id)
    if record is None:
        raise click.ClickException(f"no dead letter with id {message_id!r}")
    if as_json:
        record.pop("history", None)
        click.echo(json.dumps(public(record), indent=2, default=str))
        return
    click.echo("\n".join(record_summary(record)))
    errors = record.get("attempt_errors", [])
    if errors:
        click.echo(click.style("attempts", bold=True))
        click.echo("\n".join(attempt_lines(errors)))


@dlq.command("replay")
@click.argument("message_ids", nargs=-1)
@click.option("--type", "type_", help="Replay every dead letter of this type.")
@click.option("--since", type=click.DateTime(), help="Only those accepted since (UTC).")
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
@click.option("--limit", type=click.IntRange(1), default=10_000, show_default=True)
def dlq_replay(message_ids: tuple[str, ...], type_: str | None, since: datetime | None,
               replay_all: bool, limit: int) -> None:
    """Re-enqueue dead letters by id, or all matching --type/--since (or --all).

    A replay runs the message again under the same id, once, however often it is replayed.
    With ids, exits 1 when any of them was not a dead letter (the others are replayed).

    \b
    Examples:
      integration dlq replay 3f2a9c0e4b5d4e8f9a1b2c3d4e5f6a7b 9b1c…
      integration dlq replay --type action --since 2026-01-31T08:00:00
      integration dlq replay --all
    """
    letters = _dead_letters()
    if message_ids:
        replayed = letters.replay(list(message_ids), by="cli")
        click.echo(f"replayed {len(replayed)} dead letter(s)")
        missing = sorted(set(message_ids) - {r.id for r in replayed})
        if missing:
            raise click.ClickException(f"not dead letters (unknown, or not dead): "
                                       f"{', '.join(missing)}")
        return
    if not (type_ or since or replay_all):
        raise click.UsageError("name message ids, or use --type, --since or --all")
    total, _ = letters.store.count(status="dead", type=type_)
    with _progress(min(total, limit), "replaying") as bar:
        replayed = letters.replay_matching(type=type_, since_ms=_since(since), limit=limit,
                                           by="cli", progress=bar.update)
    click.echo(f"replayed {len(replayed)} dead letter(s)")


def _progress(length: int, label: str) -> Any:
    """A progress bar on stderr when it is a terminal (nothing when piped)."""
    return click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True,
                             hidden=not sys.stderr.isatty())


@dlq.command("purge")
@click.option("--type", "type_", help="Only this message type.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(type_: str | None, yes: bool) -> None:
    """Delete dead letters for good.

    \b
    Examples:
      integration dlq purge --type metric
      integration dlq purge --yes             # all of them, without asking
    """
    letters = _dead_letters()
    total, _ = letters.store.count(status="dead", type=type_)
    if not total:
        click.echo("purged 0 dead letter(s)")
        return
    if not yes:
        # With a type the index count covers every type: an upper bound.
        click.confirm(f"Delete every dead letter of type {type_} (at most {total})?"
                      if type_ else f"Delete all {total} dead letter(s)?", abort=True)
    with _progress(total, "purging") as bar:
        purged = letters.purge(type=type_, progress=bar.update)
    click.echo(f"purged {purged} dead letter(s)")


if __name__ == "__main__":  # pragma: no cover
    main()


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("caused", []) for n in _walk(child))]


def _demo_token(settings: Any) -> str:
    """A short-lived admin token signed with the configured or the development secret."""
    from pathlib import Path

    from integration.ops.devstack import DEV_SECRET_FILE

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
    """Run the self-healing loop once and follow it to its action.result.

    Sends a metric over the shipped HighCPU threshold; each step of the loop is printed as
    it completes, then the whole trace.

    \b
    Examples (with `make run` in another terminal):
      integration demo
      integration demo --url http://gateway:8000 --token "$TOKEN"

    Exit status: 0 when the loop completed, 1 when it did not within --timeout.
    """
    import json
    import time
    import urllib.error
    import urllib.request

    from integration.store.trace import render

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
            click.echo("\n".join(render(found, paint=paint_status)))
            return
        time.sleep(0.5)
    click.echo("\n".join(render(found, paint=paint_status)))
    raise click.ClickException(
        f"the loop did not reach action.result within {timeout:.0f} s (are workers running, "
        "and do the rules have the HighCPU threshold?)")
