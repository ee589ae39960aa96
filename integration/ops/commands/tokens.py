"""``integration token``: issue, revoke (by id, token or subject) and inspect access tokens."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any, TypeGuard

import click
import jwt
import redis

from integration.app import get_settings
from integration.ops.output import emit_json, json_option, note
from integration.ops.params import ROLE, known_roles
from integration.security.revocations import Revocations
from integration.security.tokens import (
    SERVICE_TOKEN,
    is_token_id,
    issue_token,
    unverified_claims,
)
from integration.security.verification import (
    InvalidClaims,
    roles_of,
    signing_key,
    token_claims,
)
from integration.settings import ConfigurationError, Settings
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
      integration token inspect "$TOKEN" --json | jq .claims.roles
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
@click.option("--role", "roles", type=ROLE, multiple=True,
              help="A role of INTEGRATION_POLICY_FILE (repeat for several).")
@click.option("--ttl", type=click.IntRange(1), default=3600, show_default=True,
              help="Lifetime in seconds.")
@click.option("--service", is_flag=True,
              help="A long-lived service token for senders that cannot refresh (up to "
                   "INTEGRATION_SERVICE_TOKEN_MAX_TTL_SECONDS).")
def token_issue(subject: str, roles: tuple[str, ...], ttl: int, service: bool) -> None:
    """Print a signed token for a subject and its roles.

    Each role must be one the policy (INTEGRATION_POLICY_FILE) defines: an unknown one is a
    usage error (exit 2) that lists them. Its jti (for revoking) is shown by `token inspect`.

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
@click.option("--force", is_flag=True,
              help="Revoke the argument as a jti even though it does not look like one (an "
                   "identity provider's own jti format).")
def token_revoke(jti_or_token: str | None, subject: str | None,
                 before: datetime | None, force: bool) -> None:
    """Revoke a token (by jti or text) or all tokens of a subject, everywhere.

    The argument is a token (a JWT) or a jti as this service issues them (32 hexadecimal
    digits); anything else is refused (exit 2) unless --force says it is a jti. A token
    without a jti (common from identity providers) is revoked through its subject: every
    token of that subject issued at or before its iat. Revoking a subject also stops the
    schedules and webhook subscriptions it made before the moment.

    \b
    Examples:
      integration token revoke "$TOKEN"
      integration token revoke 0b8e6a52c1f14d0c9d0f3b1a2e7c4d55   # a jti
      integration token revoke --force 'idp-7f3a:42'                # another issuer's jti
      integration token revoke --subject alice
      integration token revoke --subject alice --before 2026-01-31T08:00:00Z
    """
    if (jti_or_token is None) == (subject is None):
        raise click.UsageError("give a jti or a token, or --subject (one of them)")
    if before is not None and subject is None:
        raise click.UsageError("--before goes with --subject")
    if jti_or_token is not None and jti_or_token.count(".") != 2 \
            and not is_token_id(jti_or_token) and not force:
        raise click.UsageError(
            f"{jti_or_token!r} is neither a token (a JWT: three parts separated by dots), a "
            "token id (a jti as this service issues them: 32 lowercase hexadecimal digits; "
            "`integration token inspect TOKEN` shows it) nor a subject (give one with "
            "--subject NAME). To revoke it as a jti anyway (another issuer's format), add "
            "--force.")
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
@json_option('{claims, signature ("verified", "invalid" or "unchecked"), expired, revoked, '
             "valid, problems, unknown_roles}")
def token_inspect(token_text: str, as_json: bool) -> None:
    """Show a token's claims and whether the gateway would accept it now.

    Checks the signature (when this machine has the secret), the expiry and not-before
    times (with INTEGRATION_JWT_LEEWAY_SECONDS), the issuer and audience when configured,
    the claims the service needs, and revocation (by jti and by subject, in Redis). Exits 1
    when any check fails: the claims are still shown, with what is wrong.

    \b
    Examples:
      integration token inspect "$TOKEN"
      integration token inspect "$TOKEN" --json | jq .claims.roles
      integration token inspect "$TOKEN" --json | jq -e .valid >/dev/null && echo usable
    """
    settings = get_settings()
    try:
        claims = unverified_claims(token_text)
    except jwt.PyJWTError as exc:
        raise click.ClickException(f"not a token: {exc}") from None
    problems: list[str] = []
    signature = _signature(settings, token_text, problems)
    expired = _times(claims, settings.jwt_leeway_seconds, problems)
    _issuer_and_audience(settings, claims, problems)
    try:
        token_claims(claims, settings.jwt_roles_claim)
    except InvalidClaims as exc:
        problems.append(f"claims the gateway refuses: {exc}")
    revoked = _revocation(settings, claims, problems)
    strangers = _unknown_roles(settings, claims)
    if strangers:
        # Not a refusal: the token is accepted, and those roles grant nothing (403s).
        note(f"roles the policy does not define (they grant nothing): {', '.join(strangers)}")
    if as_json:
        emit_json({"claims": claims, "signature": signature, "expired": expired,
                   "revoked": revoked, "valid": not problems, "problems": problems,
                   "unknown_roles": strangers})
    else:
        click.echo("\n".join(_claim_lines(claims, signature, settings.jwt_algorithm,
                                          problems)))
    if problems:
        raise click.ClickException(f"the token would be refused: {'; '.join(problems)}")


def _unknown_roles(settings: Settings, claims: dict[str, Any]) -> list[str]:
    """The token's roles that the policy does not define (none when either is unreadable)."""
    roles = roles_of(claims, settings.jwt_roles_claim) or ()
    try:
        known = set(known_roles())
    except ConfigurationError:
        return []
    return [role for role in roles if role not in known]


def _signature(settings: Settings, text: str, problems: list[str]) -> str:
    """``verified``, ``invalid`` (with the reason in ``problems``) or ``unchecked``."""
    if not settings.jwt_algorithm.startswith("HS"):
        note("(signature not verified: asymmetric keys are checked by the gateway)")
        return "unchecked"
    try:
        jwt.decode(text, _signing_key(), algorithms=[settings.jwt_algorithm],
                   options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                            "verify_aud": False, "verify_iss": False})
    except jwt.InvalidSignatureError:
        problems.append("invalid signature: it was not signed with INTEGRATION_JWT_SECRET")
        return "invalid"
    except jwt.InvalidAlgorithmError:
        problems.append(f"invalid signature: not signed with {settings.jwt_algorithm} "
                        "(INTEGRATION_JWT_ALGORITHM)")
        return "invalid"
    except jwt.PyJWTError as exc:
        problems.append(f"invalid token: {exc}")
        return "invalid"
    return "verified"


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _times(claims: dict[str, Any], leeway: float, problems: list[str]) -> bool:
    """Whether the token has expired (allowing ``leeway``); not-before noted too."""
    now = time.time()
    expires, not_before = claims.get("exp"), claims.get("nbf")
    if _number(not_before) and not_before > now + leeway:
        problems.append(f"not valid before {_iso(not_before)}")
    if _number(expires) and expires + leeway < now:
        problems.append(f"expired at {_iso(expires)}")
        return True
    return False


def _issuer_and_audience(settings: Settings, claims: dict[str, Any],
                         problems: list[str]) -> None:
    if settings.jwt_issuer and claims.get("iss") != settings.jwt_issuer:
        problems.append(f"issuer {claims.get('iss')!r} is not INTEGRATION_JWT_ISSUER "
                        f"{settings.jwt_issuer!r}")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if settings.jwt_audience and settings.jwt_audience not in audiences:
        problems.append(f"audience {audience!r} does not include INTEGRATION_JWT_AUDIENCE "
                        f"{settings.jwt_audience!r}")


def _revocation(settings: Settings, claims: dict[str, Any], problems: list[str]) -> bool | None:
    """Whether the token is revoked, by its jti or by its subject; None when Redis cannot
    say (a problem too: the gateway refuses tokens it cannot check)."""
    revocations = Revocations(store_from_settings(settings).client, settings.key_prefix,
                              settings.service_token_max_ttl_seconds)
    jti, subject, issued = claims.get("jti"), claims.get("sub"), claims.get("iat")
    revoked = False
    try:
        if isinstance(jti, str) and jti and revocations.is_revoked(jti):
            problems.append(f"revoked by its jti {jti}")
            revoked = True
        if isinstance(subject, str) and subject:
            moment = revocations.subject_revoked_at(subject)
            if moment is not None and (not _number(issued) or issued <= moment):
                problems.append(f"revoked: every token of {subject!r} issued at or before "
                                f"{_iso(moment)} is")
                revoked = True
    except redis.RedisError as exc:
        reason = " ".join(str(exc).split()).rstrip(".")
        problems.append(f"revocation not checked: cannot reach Redis: {reason}")
        return None
    return revoked


#: Claims shown first, in this order, with their labels; time claims as moments.
_LABELS = {"sub": "subject", "roles": "roles", "jti": "jti", "iat": "issued",
           "nbf": "not before", "exp": "expires", "iss": "issuer", "aud": "audience",
           "type": "type", "token_use": "use"}
_TIMES = ("iat", "nbf", "exp")


def _claim_lines(claims: dict[str, Any], signature: str, algorithm: str,
                 problems: list[str]) -> list[str]:
    """The claims as ``label  value`` lines, then the signature and the verdict."""
    rows: list[tuple[str, str]] = []
    for name in [*(n for n in _LABELS if n in claims), *sorted(set(claims) - set(_LABELS))]:
        value = claims[name]
        if name in _TIMES and _number(value):
            text = f"{_iso(value)} ({value})"
        elif name == "roles" and isinstance(value, list):
            text = ", ".join(str(role) for role in value) or "(none)"
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        rows.append((_LABELS.get(name, name), text))
    signed = {"verified": click.style(f"verified ({algorithm})", fg="green"),
              "invalid": click.style("invalid", fg="red", bold=True),
              "unchecked": "not checked here (the gateway checks asymmetric keys)"}
    rows.append(("signature", signed[signature]))
    verdict = click.style("valid", fg="green", bold=True) if not problems else \
        "\n".join(click.style(problem, fg="red") for problem in problems)
    rows.append(("status", verdict))
    width = max(len(label) for label, _ in rows)
    lines = []
    for label, text in rows:
        first, *more = text.split("\n")
        lines.append(f"{click.style(label.ljust(width), bold=True)}  {first}")
        lines += [f"{' ' * width}  {line}" for line in more]
    return lines
