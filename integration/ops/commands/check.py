"""``integration check``: validate a deployment's configuration and reach its Redis and broker.

The checks live in ``integration/ops/checks/`` (configuration, connections); ``CHECKS`` is
their table, in order.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

import click

from integration.ops.checks.configuration import (
    check_durations,
    check_egress,
    check_policy,
    check_rules,
    check_schedule,
    check_secrets,
    load_settings,
)
from integration.ops.checks.connections import check_broker, check_ledger, check_queues, check_store
from integration.ops.checks.findings import Check, Context, Finding
from integration.ops.output import emit_json, json_option

COLOURS: dict[str, str] = {"ok": "green", "warning": "yellow", "error": "red"}


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
@json_option("{ok, errors, warnings, checks: [{check, level, message}]}")
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
        emit_json({"ok": errors == 0, "errors": errors, "warnings": warnings,
                   "checks": [asdict(f) for f in findings]})
    else:
        for finding in findings:
            click.echo(render_line(finding))
        summary = f"{errors} error(s), {warnings} warning(s)" if errors or warnings \
            else "configuration ok"
        click.echo(summary)
    if errors or (strict and warnings):
        click.get_current_context().exit(1)
