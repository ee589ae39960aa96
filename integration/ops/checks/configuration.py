"""Checks of the configuration, offline: settings, secrets, the policy, rules and schedule files,
durations against the recovery bound, the egress allowlist."""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from integration.mistakes import setting_problem
from integration.ops.checks.findings import (
    Context,
    Finding,
    error,
    error_once,
    ok,
    shown,
    warning,
)
from integration.security.secrets import is_loopback

if TYPE_CHECKING:
    from integration.settings import Settings


def load_settings() -> tuple[Settings | None, list[Finding]]:
    """Read the environment afresh; a pydantic error becomes one line per variable."""
    from pydantic import ValidationError

    from integration.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        return None, [error("settings", setting_problem(e, prefix="")) for e in exc.errors()]
    return settings, [ok("settings", f"INTEGRATION_* variables load (env {settings.env})")]


def check_secrets(ctx: Context) -> Iterator[Finding]:
    """Token verification as the gateway sets it up, and every secret this process is
    configured with, by production's rules (placeholders and low estimated entropy)."""
    from integration.security.secrets import weak_secrets
    from integration.security.verification import signing_key, token_verification
    from integration.settings import ConfigurationError

    settings = ctx.settings
    production = settings.env == "production"
    weak = weak_secrets(settings)
    try:
        verification = token_verification(settings)
    except ConfigurationError as exc:
        yield error("secrets", str(exc))
        weak = [w for w in weak if w.variable != "INTEGRATION_JWT_SECRET"]  # just said
        verification = None
    for secret in weak:
        if production:
            yield error("secrets", f"{secret} (INTEGRATION_ENV=production refuses it)")
        else:
            yield warning("secrets", f"{secret}; INTEGRATION_ENV=production refuses it")
    yield from _redis_passwords(ctx)
    if verification is None:
        return
    if verification.hmac and all(w.variable != "INTEGRATION_JWT_SECRET" for w in weak):
        yield ok("secrets", f"INTEGRATION_JWT_SECRET verifies {settings.jwt_algorithm} tokens")
    elif verification.jwks is not None:
        if production and not str(settings.jwt_jwks_url).startswith("https:"):
            yield warning("secrets", "INTEGRATION_JWT_JWKS_URL is not https: whoever sits on "
                                     "the path could serve their own keys")
        else:
            yield ok("secrets", f"{settings.jwt_algorithm} tokens verified with keys from "
                                "INTEGRATION_JWT_JWKS_URL")
    elif not verification.hmac:
        yield ok("secrets", f"INTEGRATION_JWT_PUBLIC_KEY verifies {settings.jwt_algorithm} tokens")
    if not verification.hmac and settings.jwt_private_key is not None:
        try:
            signing_key(settings)
        except (ConfigurationError, OSError) as exc:
            yield error("secrets", f"INTEGRATION_JWT_PRIVATE_KEY cannot be read: {exc}")


def _redis_passwords(ctx: Context) -> Iterator[Finding]:
    """A Redis on another host needs a password: the broker, the status store and the
    revocation list live there, and whoever can write to it can un-revoke a token."""
    settings = ctx.settings
    for variable, url in (("INTEGRATION_REDIS_URL", settings.redis_url),
                          ("INTEGRATION_BROKER_URL", settings.broker_url)):
        parts = urlsplit(url or "")
        if parts.scheme not in ("redis", "rediss") or parts.password:
            continue
        host = parts.hostname or ""
        if host == "localhost" or is_loopback(host):
            continue
        yield warning("secrets", f"{variable} {shown(url or '')} has no password: anything "
                                 "that reaches that Redis can read the queues and change the "
                                 "revocation list (see docs/security.md, Redis)")


def check_policy(ctx: Context) -> Iterator[Finding]:
    from integration.security.policy import load_policy
    from integration.settings import ConfigurationError

    path = ctx.settings.policy_file
    try:
        policy = load_policy(path)
    except ConfigurationError as exc:
        yield error("policy", str(exc))
        return
    source = f"INTEGRATION_POLICY_FILE {path}" if path else "the shipped policy"
    yield ok("policy", f"{source}: roles {', '.join(sorted(policy.roles)) or '(none)'}")


def check_rules(ctx: Context) -> Iterator[Finding]:
    """The self-healing rules and the declared targets (with their ``${NAME}`` secrets)."""
    from integration.loop.executors import Targets, check_timeouts
    from integration.loop.rules import load_rules
    from integration.settings import ConfigurationError

    settings = ctx.settings
    path = settings.rules_file
    source = f"INTEGRATION_RULES_FILE {path}" if path else "the shipped rules"
    try:
        rules = load_rules(path)
    except ConfigurationError as exc:
        yield error("rules", str(exc))
        return
    yield ok("rules", f"{source}: {len(rules.thresholds)} thresholds, "
                      f"{len(rules.diagnoses)} diagnoses, {len(rules.playbooks)} playbooks")
    try:
        targets = Targets.load(path) if path else Targets()
        check_timeouts(targets, settings.visibility_timeout_seconds, str(path))
    except ConfigurationError as exc:
        yield error("targets", str(exc))
        return
    problems = []
    http = sorted(n for n, s in targets.targets.items() if s.executor == "http")
    for name, playbook in rules.playbooks.items():
        if playbook.executor != "http":
            continue
        # A target with placeholders is only known per alert; a literal one can be checked,
        # and so can the targets labels may choose (allowed_targets).
        if "{" not in playbook.target and playbook.target not in http:
            problems.append(f"playbook {name!r} runs http target {playbook.target!r}, "
                            "which `targets:` does not declare for http")
        for allowed in playbook.allowed_targets or []:
            if not fnmatch.filter(http, allowed):
                problems.append(f"playbook {name!r} allows target {allowed!r}, which matches "
                                "no target `targets:` declares for http")
    for problem in problems:
        yield error("targets", f"{source}: {problem}")
    if not problems:
        yield ok("targets", f"{len(targets.targets)} declared"
                            + (f" (http: {', '.join(http)})" if http else ""))


def check_schedule(ctx: Context) -> Iterator[Finding]:
    """The beat schedules file."""
    from integration.app import load_schedules
    from integration.settings import ConfigurationError

    path = ctx.settings.schedule_file
    source = f"INTEGRATION_SCHEDULE_FILE {path}" if path else "the shipped schedules"
    try:
        loaded = load_schedules(path)
    except ConfigurationError as exc:
        yield error_once(ctx, "schedule", str(exc), "the schedules are not checked")
        return
    yield ok("schedule", f"{source}: {len(loaded)} schedules")


def check_durations(ctx: Context) -> Iterator[Finding]:
    """Records and keys outlive retries and redeliveries; calls end within the visibility
    timeout; the recovery bound holds."""
    from integration.app import default_registry
    from integration.messages import retry
    from integration.settings import ConfigurationError
    from integration.worker import recovery
    from integration.worker.recovery import check_recovery_bound

    settings = ctx.settings
    try:
        registry = default_registry()
    except ConfigurationError as exc:
        yield error_once(ctx, "durations", str(exc), "the durations are not checked")
        return
    except Exception as exc:  # noqa: BLE001 - an import of the user's module can raise anything
        yield error("durations", "the message types do not load (INTEGRATION_TYPE_MODULES, "
                                 f"INTEGRATION_CONSUMER_MODULES): {type(exc).__name__}: {exc}")
        return
    failed = False
    try:
        recovery.check_durations(settings, registry)
    except ConfigurationError as exc:
        failed = True
        yield error("durations", str(exc))
    try:
        bound = check_recovery_bound(settings)
    except ConfigurationError as exc:
        failed = True
        yield error("durations", str(exc))
    else:
        yield ok("durations", f"after a fault is repaired, every accepted message is final or "
                              f"held by something alive within {bound.seconds:g} s "
                              f"({bound.explain()})")
    lease = settings.claim_lease_seconds
    visibility = settings.visibility_timeout_seconds
    if settings.webhook_timeout_seconds >= visibility:
        failed = True
        yield error("durations", f"INTEGRATION_WEBHOOK_TIMEOUT_SECONDS "
                                 f"({settings.webhook_timeout_seconds:g}) must be shorter than "
                                 f"INTEGRATION_VISIBILITY_TIMEOUT_SECONDS ({visibility}): the "
                                 "broker would deliver a slow delivery again while it runs")
    idempotency = retry.idempotency_ttl(settings)
    if idempotency > settings.status_ttl_seconds:
        yield warning("durations", f"INTEGRATION_IDEMPOTENCY_TTL_SECONDS ({idempotency}) "
                                   "exceeds INTEGRATION_STATUS_TTL_SECONDS "
                                   f"({settings.status_ttl_seconds}): a repeated key would answer "
                                   "with a status URL whose record has expired")
    if not failed:
        yield ok("durations", f"status {settings.status_ttl_seconds} s and idempotency "
                              f"{idempotency} s outlive retries, the visibility timeout "
                              f"({settings.visibility_timeout_seconds} s) and the claim lease "
                              f"({lease} s)")


def check_egress(ctx: Context) -> Iterator[Finding]:
    """The allowlist parses; declared targets written as addresses are not refused by it."""
    from integration.loop.executors import Targets
    from integration.security.egress_policy import EgressPolicy
    from integration.settings import ConfigurationError

    try:
        policy = EgressPolicy.from_settings(ctx.settings)
    except ConfigurationError as exc:
        yield error("egress", str(exc))
        return
    try:
        path = ctx.settings.rules_file
        targets = Targets.load(path) if path else Targets()
    except ConfigurationError:
        targets = Targets()  # reported by the rules check
    refused = []
    for name, spec in targets.targets.items():
        host = urlsplit(spec.url or "").hostname
        try:
            address = ipaddress.ip_address(host or "")
        except ValueError:
            continue  # a name is resolved per call; its addresses are checked then
        reason = policy.refusal(address, host)
        if reason:
            refused.append(f"target {name!r} ({address}) is refused: {reason}; add it to "
                           "INTEGRATION_EGRESS_ALLOWLIST if it is meant to be called")
    for problem in refused:
        yield error("egress", problem)
    if not refused:
        opened = len(policy.allowed_networks) + len(policy.allowed_hosts)
        yield ok("egress", f"INTEGRATION_EGRESS_ALLOWLIST opens {opened} entries"
                 if opened else "public addresses only (INTEGRATION_EGRESS_ALLOWLIST is empty)")
