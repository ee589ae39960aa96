"""``integration status`` and ``integration trace``: one message, and what it caused."""

from __future__ import annotations

import click

from integration.app import get_settings
from integration.ops.output import emit_json, json_option, note
from integration.ops.terminal import (
    no_color_option,
    paint_status,
    record_summary,
)
from integration.store.codec import public
from integration.store.records import store_from_settings


@click.command("status")
@click.argument("message_id")
@json_option("the whole record with its history, as GET /api/v1/messages/ID answers")
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
        emit_json(public(record))
        return
    click.echo("\n".join(record_summary(record)))
    steps = len(record.get("history", []))
    note(click.style(f"{steps} step(s) recorded; `integration trace {message_id}` shows them",
                     dim=True))


def _not_found(message_id: str) -> click.ClickException:
    return click.ClickException(f"no message with id {message_id!r} (never accepted, or "
                                "expired after INTEGRATION_STATUS_TTL_SECONDS)")


@click.command("trace")
@click.argument("message_id")
@json_option("the trace as GET /api/v1/messages/ID/trace answers: {id, type, status, "
             "owner, correlationid, causationid, attempts, duration_ms, timeline, caused}")
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
        emit_json(found)
        return
    click.echo("\n".join(render(found, paint=paint_status)))
