"""``integration dlq``: list, show, replay and purge dead letters."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import click

from integration.app import get_settings
from integration.ops.output import emit_json, json_option, note
from integration.ops.params import MESSAGE_TYPE
from integration.ops.terminal import (
    attempt_lines,
    no_color_option,
    record_summary,
    table,
)
from integration.store.codec import public
from integration.worker.deadletters import DeadLetters


@click.group()
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
@click.option("--type", "type_", type=MESSAGE_TYPE, help="Only this message type.")
@click.option("--since", type=click.DateTime(), help="Accepted at or after (UTC).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@json_option("an array of the records, newest first")
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
        emit_json([public(item) for item in items])
        return
    if items:
        rows = [[str(item["id"]), str(item.get("type", "")), str(item.get("attempts", 0)),
                 str(item.get("finished_at", "")), _error_text(item.get("error"))]
                for item in items]
        click.echo("\n".join(table(["ID", "TYPE", "ATTEMPTS", "FINISHED", "ERROR"], rows,
                                   {4: lambda text: click.style(text, fg="red")})))
    note(f"{len(items)} dead letter(s)")


def _error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return ""
    return f"{error.get('type', '')}: {str(error.get('message', ''))[:60]}"


@dlq.command("show")
@click.argument("message_id")
@json_option("the record with its attempt errors")
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
        emit_json(public(record))
        return
    click.echo("\n".join(record_summary(record)))
    errors = record.get("attempt_errors", [])
    if errors:
        click.echo(click.style("attempts", bold=True))
        click.echo("\n".join(attempt_lines(errors)))


@dlq.command("replay")
@click.argument("message_ids", nargs=-1)
@click.option("--type", "type_", type=MESSAGE_TYPE,
              help="Replay every dead letter of this type.")
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
@click.option("--type", "type_", type=MESSAGE_TYPE, help="Only this message type.")
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
