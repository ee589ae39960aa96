"""``integration check``: validate a deployment's configuration and reach its Redis and broker.

One module because the checks share one finding shape and context, and ``CHECKS`` is their
table in order; each check is a function of its own.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import click

if TYPE_CHECKING:
    import redis

    from integration.settings import Settings

Level = Literal["ok", "warning", "error"]
COLOURS: dict[str, str] = {"ok": "green", "warning": "yellow", "error": "red"}


@dataclass(frozen=True)
class Finding:
    """One line of the report: which check, how it went, and what to fix."""

    check: str
    level: Level
    message: str


@dataclass(frozen=True)
class Context:
    settings: Settings
    timeout: float
    groups: frozenset[str]
    #: The findings of the checks that ran before.
    earlier: list[Finding] = field(default_factory=list)


Check = Callable[[Context], Iterator[Finding]]


def ok(check: str, message: str) -> Finding:
    return Finding(check, "ok", message)


def warning(check: str, message: str) -> Finding:
    return Finding(check, "warning", message)


def error(check: str, message: str) -> Finding:
    return Finding(check, "error", message)


# -- settings -----------------------------------------------------------------------------

def load_settings() -> tuple[Settings | None, list[Finding]]:
    """Read the environment afresh; a pydantic error becomes one line per variable."""
    from pydantic import ValidationError

    from integration.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        return None, [error("settings", _describe_setting_error(e)) for e in exc.errors()]
    return settings, [ok("settings", f"INTEGRATION_* variables load (env {settings.env})")]


def _describe_setting_error(problem: Any) -> str:
    from integration.settings import Settings

    name = str(problem["loc"][0]) if problem["loc"] else ""
    field = Settings.model_fields.get(name)
    alias = field.validation_alias if field else None
    variable = alias if isinstance(alias, str) else f"INTEGRATION_{name.upper()}"
    secret = field is not None and "SecretStr" in str(field.annotation)
    shown = "" if secret else f" (got {problem.get('input')!r})"
    return f"{variable}: {problem['msg']}{shown}"


# -- files and values ---------------------------------------------------------------------

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
        if host == "localhost" or _loopback(host):
            continue
        yield warning("secrets", f"{variable} {_shown(url or '')} has no password: anything "
                                 "that reaches that Redis can read the queues and change the "
                                 "revocation list (see docs/security.md, Redis)")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        yield error("schedule", str(exc))
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


# -- connections --------------------------------------------------------------------------

def _shown(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def check_store(ctx: Context) -> Iterator[Finding]:
    yield from _check_redis(ctx, "store", "INTEGRATION_REDIS_URL", ctx.settings.redis_url)


def check_broker(ctx: Context) -> Iterator[Finding]:
    settings = ctx.settings
    url = settings.broker
    if url == settings.redis_url and "store" in ctx.groups:
        yield ok("broker", "the store's Redis (INTEGRATION_BROKER_URL is not set)")
        return
    variable = "INTEGRATION_BROKER_URL" if settings.broker_url else "INTEGRATION_REDIS_URL"
    if urlsplit(url).scheme in ("redis", "rediss", "unix"):
        yield from _check_redis(ctx, "broker", variable, url)
        return
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=ctx.timeout) as connection:
            connection.ensure_connection(max_retries=0, timeout=ctx.timeout)
    except Exception as exc:  # noqa: BLE001 - every transport raises its own errors
        yield error("broker", f"{variable} {_shown(url)} does not answer within "
                              f"{ctx.timeout:g} s: {type(exc).__name__}: {exc}")
        return
    yield ok("broker", f"{variable} {_shown(url)} answers")


def _check_redis(ctx: Context, check: str, variable: str, url: str) -> Iterator[Finding]:
    import redis

    shown = f"{variable} {_shown(url)}"
    client = redis.Redis.from_url(url, socket_connect_timeout=ctx.timeout,
                                  socket_timeout=ctx.timeout)
    try:
        client.ping()
        yield ok(check, f"{shown} answers")
        yield from _persistence(ctx, check, shown, client)
    except redis.RedisError as exc:
        yield error(check, f"{shown} does not answer within {ctx.timeout:g} s: {exc}")
    finally:
        client.close()


def _persistence(ctx: Context, check: str, shown: str, client: redis.Redis) -> Iterator[Finding]:
    """Queued messages and status records survive a restart and are never evicted."""
    import redis

    persistence: dict[str, Any] = client.info("persistence")  # type: ignore[assignment]
    memory: dict[str, Any] = client.info("memory")  # type: ignore[assignment]
    aof = int(persistence.get("aof_enabled", 0)) == 1
    try:
        config: dict[str, Any] = client.config_get("save")  # type: ignore[assignment]
        save: str | None = str(config.get("save", ""))
    except redis.ResponseError:
        save = None  # managed Redis services often refuse CONFIG
    if aof:
        yield ok(check, f"{shown} persists with AOF (appendonly yes)")
    elif save:
        yield ok(check, f"{shown} persists with RDB snapshots (save {save}); AOF loses less")
    elif save is None:
        yield warning(check, f"{shown} has AOF off and refuses CONFIG GET save, so RDB "
                             "snapshots cannot be seen: make sure it persists, or a restart "
                             "loses the queues")
    else:
        yield warning(check, f"{shown} has neither AOF nor RDB snapshots: a restart loses the "
                             "queues and the status records (set appendonly yes)")
    policy = str(memory.get("maxmemory_policy", "unknown"))
    if policy == "noeviction":
        yield ok(check, f"{shown} never evicts keys (maxmemory-policy noeviction)")
        return
    message = (f"{shown} has maxmemory-policy {policy}: when memory runs out it may silently "
               "drop queued messages, claims and status records; set maxmemory-policy "
               "noeviction")
    if ctx.settings.env == "production":
        yield error(check, message)
    else:
        yield warning(check, message + " (an error with INTEGRATION_ENV=production)")


#: The most stranded records listed one by one.
_STRANDED_SHOWN = 20


def check_ledger(ctx: Context) -> Iterator[Finding]:
    """Records that are not final and that nothing holds now: no queue, live worker, claim
    or due entry (the reconciler of a running worker sends them again)."""
    import redis

    from integration.app import build_submitter
    from integration.broker.holdings import holdings_of
    from integration.settings import ConfigurationError
    from integration.worker.heartbeats import Heartbeats
    from integration.worker.reconciler import Reconciler
    from integration.worker.recovery import heartbeat_ttl, leader_lease

    settings = ctx.settings
    if any(f.level == "error" and f.check in ("store", "broker") for f in ctx.earlier):
        return  # already reported: the ledger cannot be read
    try:
        submitter = build_submitter(settings, origin="check")
        store = submitter.store
        survey = Reconciler(
            store, holdings_of(submitter.publisher), Heartbeats(store.client, settings.key_prefix),
            instance="check", interval=settings.reconcile_interval_seconds,
            stale_after=settings.reconcile_after_seconds,
            heartbeat_ttl=heartbeat_ttl(settings), lease=leader_lease(settings)).survey()
    except (redis.RedisError, OSError) as exc:
        yield error("ledger", f"the ledger cannot be read: {type(exc).__name__}: {exc}")
        return
    except ConfigurationError as exc:  # the Celery configuration refuses (reported above)
        yield error("ledger", f"the ledger is not read: {exc}")
        return
    after = f"{settings.reconcile_after_seconds:g}"
    if not survey.stranded:
        yield ok("ledger", f"{survey.checked} unfinished records unchanged for {after} s or "
                           "more, each held by a queue, a live worker, a claim or the due set")
        return
    for stranded in survey.stranded[:_STRANDED_SHOWN]:
        entry = stranded.entry
        yield warning("ledger", f"stranded: {entry.id} ({entry.type}, {entry.status} since "
                                f"{entry.updated_at}) is {stranded.reason}; a running "
                                "worker's reconciler sends it again")
    if len(survey.stranded) > _STRANDED_SHOWN:
        yield warning("ledger", f"... and {len(survey.stranded) - _STRANDED_SHOWN} more "
                                "stranded records")


def check_queues(ctx: Context) -> Iterator[Finding]:
    """Messages waiting in a queue that no live worker consumes, by the queues each worker
    names in its heartbeat (on Redis a consumer is a blocking pop the broker does not count,
    and a broadcast to the workers cannot tell a slow reply from none)."""
    import redis

    from integration.app import build_submitter, default_registry
    from integration.messages.routing import CELERY_QUEUE, queue_names
    from integration.worker.heartbeats import Heartbeats
    from integration.worker.queues import unconsumed

    settings = ctx.settings
    if any(f.level == "error" and f.check in ("store", "broker", "durations")
           for f in ctx.earlier):
        return  # already reported: the queues cannot be read
    try:
        submitter = build_submitter(settings, origin="check")
        consumers = Heartbeats(submitter.store.client, settings.key_prefix).consumers()
        queues = list(dict.fromkeys([*queue_names(default_registry()), *sorted(consumers)]))
        depths = submitter.publisher.queue_depths(queues)
    except (redis.RedisError, OSError) as exc:
        yield error("queues", f"the queues cannot be read: {type(exc).__name__}: {exc}")
        return
    waiting = unconsumed(depths, consumers)
    for queue, count in waiting.items():
        why = (" (Celery's default queue: a producer without this configuration sends there, "
               "and a worker consuming it passes each message on)"
               if queue == CELERY_QUEUE else "")
        yield warning("queues", f"{count} message(s) wait in queue {queue}, which no live "
                                f"worker consumes{why}: start a worker with -Q {queue}")
    if not waiting:
        yield ok("queues", f"every queue holding messages has a live consumer ({len(queues)} "
                           f"queues, {sum(bool(consumers.get(q)) for q in queues)} consumed)")


#: In order; ``--only`` picks by these names.
CHECKS: dict[str, Check] = {
    "secrets": check_secrets,
    "policy": check_policy,
    "rules": check_rules,
    "schedule": check_schedule,
    "durations": check_durations,
    "egress": check_egress,
    "store": check_store,
    "broker": check_broker,
    "ledger": check_ledger,
    "queues": check_queues,
}
CONNECTIONS = frozenset({"store", "broker", "ledger", "queues"})


def run_checks(groups: frozenset[str], timeout: float) -> list[Finding]:
    """The findings of the selected checks; nothing else runs when settings do not load."""
    settings, findings = load_settings()
    if settings is None:
        return findings
    ctx = Context(settings, timeout, groups, findings)
    for name, check in CHECKS.items():
        if name in groups:
            findings.extend(check(ctx))
    return findings


def render_line(finding: Finding) -> str:
    level = click.style(f"{finding.level:<8}", fg=COLOURS[finding.level], bold=True)
    return f"{level}{finding.check:<10} {finding.message}"


@click.command("check")
@click.option("--only", "only", multiple=True, type=click.Choice(list(CHECKS)),
              help="Run only this check (repeat for several); settings always load first.")
@click.option("--offline", is_flag=True,
              help="Check settings and files only: no connection to Redis or the broker.")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=3.0, show_default=True,
              help="Seconds to wait for Redis and the broker to answer.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON document on stdout: {ok, errors, warnings, checks: [...]}.")
def check(only: tuple[str, ...], offline: bool, timeout: float, strict: bool,
          as_json: bool) -> None:
    """Validate this deployment's configuration, as the processes would read it.

    Loads the settings from the environment (INTEGRATION_*), then checks the token secrets
    with production's rules, the policy, rules and targets files (with their
    INTEGRATION_SECRET_* values), the schedules, TTLs against retries, the visibility timeout
    and the claim lease, and the egress allowlist; then that the store Redis and the broker
    answer, keep their data across a restart and never evict it, and that no message waits
    in a queue that no live worker consumes.

    Prints one line per check: ok, warning or error, naming the variable or file to fix.

    \b
    Examples:
      integration check
      integration check --offline                # in CI: files and values only
      integration check --only rules --only egress
      integration check --json | jq '.checks[] | select(.level != "ok")'
      docker-compose run --rm gateway integration check

    Exit status: 0 when nothing is wrong (warnings allowed unless --strict), 1 when a
    check found an error, 2 on a usage error.
    """
    # The service's own warnings would repeat the findings on stderr.
    logging.getLogger("integration").addHandler(logging.NullHandler())
    groups = frozenset(only or CHECKS)
    if offline:
        groups -= CONNECTIONS
    findings = run_checks(groups, timeout)
    errors = sum(f.level == "error" for f in findings)
    warnings = sum(f.level == "warning" for f in findings)
    if as_json:
        click.echo(json.dumps({"ok": errors == 0, "errors": errors, "warnings": warnings,
                               "checks": [asdict(f) for f in findings]}, indent=2))
    else:
        for finding in findings:
            click.echo(render_line(finding))
        summary = f"{errors} error(s), {warnings} warning(s)" if errors or warnings \
            else "configuration ok"
        click.echo(summary)
    if errors or (strict and warnings):
        click.get_current_context().exit(1)
