"""``integration schedule``: manage beat's schedules straight in Redis (no HTTP, no token).

Exit status: 0 done, 1 refused or failed (the reason on stderr), 2 usage error.
"""

from __future__ import annotations

import json
from typing import Any

import click
import redis
from pydantic import ValidationError

from integration.app import get_settings, ping_store
from integration.messages.problems import Problem
from integration.ops.output import emit_json, json_option, note
from integration.ops.params import MESSAGE_TYPE
from integration.schedules.spec import ScheduleSpec
from integration.schedules.store import Schedules


def _schedules() -> Schedules:
    from integration.app import build_submitter

    settings = get_settings()
    ping_store(settings)  # at once, where redbeat's client would retry for half a minute
    return Schedules.from_settings(settings, build_submitter(settings, origin="cli").parse)


def _refused(problem: Problem) -> click.ClickException:
    lines = [problem.detail or problem.title]
    for error in problem.extensions.get("errors", []):
        where = ".".join(str(part) for part in error.get("loc", [])) or "(schedule)"
        lines.append(f"  {where}: {error.get('msg')}")
    return click.ClickException("\n".join(lines))


def _show(schedule: dict[str, Any], as_json: bool) -> None:
    """One schedule: ``label  value`` lines, or the document the API answers (``--json``)."""
    if as_json:
        emit_json(schedule)
        return
    rows = [("name", str(schedule["name"])), ("id", str(schedule["id"])),
            ("type", str(schedule["type"])), ("timing", _timing(schedule)),
            ("state", "enabled" if schedule["enabled"] else "paused"),
            ("owner", f"{schedule.get('owner', '-')} (origin {schedule.get('origin', '-')})"),
            ("source", str(schedule.get("source", "-")))]
    rows += [(label, str(schedule[key])) for label, key in (
        ("subject", "subject"), ("catch-up", "catch_up"), ("refused at", "refused_at"),
        ("refused", "refused_reason")) if schedule.get(key)]
    rows += [("next firing", str(schedule.get("next_run_at") or "-")),
             ("fired", f"{schedule.get('fired_count', 0)} time(s)"),
             ("data", json.dumps(schedule.get("data", {}), sort_keys=True))]
    width = max(len(label) for label, _ in rows)
    click.echo("\n".join(f"{click.style(label.ljust(width), bold=True)}  {value}"
                          for label, value in rows))


def _timing(schedule: dict[str, Any]) -> str:
    if schedule.get("crontab"):
        return f"cron {schedule['crontab']}"
    return f"every {schedule['every']:g}s"


class _StoreErrors(click.Group):
    """Turns an unreachable Redis into exit status 1 with the reason, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (redis.ConnectionError, redis.TimeoutError):
            raise  # the integration group's line: which Redis, and what to fix
        except redis.RedisError as exc:
            raise click.ClickException(f"the schedule store (Redis) is unavailable: {exc}"
                                       ) from None
        except Problem as problem:
            raise _refused(problem) from None


@click.group(cls=_StoreErrors)
def schedule() -> None:
    """Scheduled messages: list, show, create, pause, resume, delete.

    Changes reach the running beat within INTEGRATION_BEAT_MAX_LOOP_INTERVAL_SECONDS.

    \b
    Examples:
      integration schedule list
      integration schedule create disk-check --every 5m --type metric \\
          --data '{"name": "disk_free_percent", "value": 100}'
      integration schedule create nightly --crontab "0 3 * * *" --type event \\
          --data '{"kind": "nightly"}' --catch-up skip
      integration schedule pause nightly
      integration schedule resume nightly
      integration schedule delete nightly

    Exit status: 0 done, 1 refused or failed, 2 usage error.
    """


@schedule.command("list")
@click.option("--type", "type_", type=MESSAGE_TYPE, help="Only schedules of this message type.")
@json_option("an array of the schedules, as GET /api/v1/schedules lists them")
def schedule_list(type_: str | None, as_json: bool) -> None:
    """Every schedule by name, with its timing, state and next firing (UTC).

    \b
    Examples:
      integration schedule list
      integration schedule list --type metric
      integration schedule list --json | jq -r '.[] | select(.enabled | not) | .name'
    """
    items = [item for item in _schedules().all() if type_ is None or item["type"] == type_]
    if as_json:
        emit_json(items)
        return
    for item in items:
        state = "enabled" if item["enabled"] else "paused"
        click.echo(f"{item['name']:<24} {_timing(item):<22} {item['type']:<14} {state:<8} "
                   f"{item['origin']:<4} next={item.get('next_run_at') or '-'}")
    note(f"{len(items)} schedule(s)")


@schedule.command("show")
@click.argument("name")
@json_option("the schedule as GET /api/v1/schedules/NAME answers")
def schedule_show(name: str, as_json: bool) -> None:
    """One schedule: timing, state, owner, message, and its next firing (UTC).

    \b
    Examples:
      integration schedule show disk-check
      integration schedule show disk-check --json | jq .next_run_at
    """
    found = _schedules().get(_entry(name))
    if found is None:
        raise click.ClickException(f"no schedule {name}")
    _show(found, as_json)


def _entry(name: str) -> str:
    """The entry a name given on the command line means: the entry of that id, or the one
    schedule of that name (an operator sees every owner's; several of one name need the
    id that ``schedule list`` shows)."""
    found = _schedules().find(name)
    if len(found) > 1:
        raise click.ClickException(f"{len(found)} schedules are named {name}: give the id of "
                                   f"one ({', '.join(found)})")
    return found[0] if found else name


@schedule.command("create")
@click.argument("name")
@click.option("--every", help='Interval: seconds, or e.g. "30s", "5m", "1h30m", "1d".')
@click.option("--crontab", help='5-field crontab in UTC, e.g. "0 3 * * *".')
@click.option("--type", "type_", type=MESSAGE_TYPE, required=True,
              help="A registered message type.")
@click.option("--data", default="{}", show_default=True, help="The message's data (JSON).")
@click.option("--source", help="Default /integration/beat/<name>.")
@click.option("--subject", help="The message's subject.")
@click.option("--catch-up", type=click.Choice(["once", "skip"]),
              help="A firing missed while no beat ran: once or skip "
                   "(default INTEGRATION_BEAT_CATCH_UP).")
@click.option("--paused", is_flag=True, help="Create it paused (resume to start it).")
@click.option("--owner", default="cli", show_default=True,
              help="Owner of the fired messages (who may read them with read: own).")
@json_option("the schedule created, as the API answers")
def schedule_create(name: str, every: str | None, crontab: str | None, type_: str, data: str,
                    source: str | None, subject: str | None, catch_up: str | None,
                    paused: bool, owner: str, as_json: bool) -> None:
    """Create a schedule; its message is validated now as the submit path would.

    \b
    Examples:
      integration schedule create disk-check --every 5m --type metric \\
          --data '{"name": "disk_free_percent", "value": 100}'
      integration schedule create nightly --crontab "0 3 * * *" --type event \\
          --data '{"kind": "nightly"}' --catch-up skip --paused
    """
    if (every is None) == (crontab is None):
        raise click.UsageError("give exactly one of --every or --crontab")
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--data") from None
    raw: dict[str, Any] = {"name": name, "type": type_, "data": payload, "enabled": not paused}
    for key, value in (("crontab", crontab), ("source", source), ("subject", subject),
                       ("catch_up", catch_up)):
        if value is not None:
            raw[key] = value
    if every is not None:
        raw["every"] = float(every) if every.replace(".", "", 1).isdigit() else every
    try:
        spec = ScheduleSpec.model_validate(raw)
    except ValidationError as exc:
        raise click.ClickException("invalid schedule:\n" + "\n".join(
            f"  {'.'.join(str(p) for p in e['loc']) or '(schedule)'}: {e['msg']}"
            for e in exc.errors(include_url=False))) from None
    _show(_schedules().create(spec, owner=owner, origin="cli"), as_json)


@schedule.command("pause")
@click.argument("name")
def schedule_pause(name: str) -> None:
    """Stop firing until resumed.

    \b
    Examples:
      integration schedule pause nightly
    """
    found = _schedules().set_enabled(_entry(name), False)
    if found is None:
        raise click.ClickException(f"no schedule {name}")
    click.echo(f"paused {name}")


@schedule.command("resume")
@click.argument("name")
def schedule_resume(name: str) -> None:
    """Fire again, from one period after now.

    \b
    Examples:
      integration schedule resume nightly
    """
    found = _schedules().set_enabled(_entry(name), True)
    if found is None:
        raise click.ClickException(f"no schedule {name}")
    click.echo(f"resumed {name}; next firing {found.get('next_run_at')}")


@schedule.command("delete")
@click.argument("name")
def schedule_delete(name: str) -> None:
    """Remove a schedule (a file's schedule returns at the next beat start).

    Remove it from INTEGRATION_SCHEDULE_FILE too, or it comes back.

    \b
    Examples:
      integration schedule delete nightly
    """
    if not _schedules().delete(_entry(name)):
        raise click.ClickException(f"no schedule {name}")
    click.echo(f"deleted {name}")
