"""``integration token``: issue, revoke (by id, token or subject) and inspect access tokens."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from integration.app import get_settings
from integration.security.revocations import Revocations
from integration.security.tokens import SERVICE_TOKEN, issue_token, read_token, unverified_claims
from integration.security.verification import signing_key
from integration.settings import ConfigurationError
from integration.store.records import store_from_settings

#: Moments the CLI reads: with an offset (``Z`` or ``+02:00``), or without one (UTC).
_MOMENT_FORMATS = ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]


@click.group()
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
