"""Terminal rendering for the CLI: coloured statuses, record summaries and tables.

Everything here styles with ``click.style``; ``click.echo`` drops the styles when the output
is not a terminal or the context says no colour (``--no-color``, ``NO_COLOR``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import click

#: Finished well: green; finished badly: red; waiting on something: yellow.
STATUS_COLOURS = {
    "succeeded": "green",
    "dead": "red",
    "retrying": "yellow",
    "deferred": "yellow",
    "held": "yellow",
    "processing": "cyan",
    "queued": "blue",
    "accepted": "blue",
}


#: Statuses whose record's ``next_attempt_at`` is still ahead.
WAITING = ("retrying", "deferred")


def paint_status(text: str) -> str:
    """``text`` (a status, possibly padded) in its status's colour."""
    colour = STATUS_COLOURS.get(text.strip())
    return click.style(text, fg=colour, bold=True if text.strip() == "dead" else None) \
        if colour else text


def _duration_ms(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() \
            * 1000
    except ValueError:
        return None


def _error_line(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('type', 'Error')}: {error.get('message', '')}"
    return str(error)


def record_summary(record: dict[str, Any]) -> list[str]:
    """A status record as aligned ``label  value`` lines, the status coloured."""
    envelope = record.get("envelope") or {}
    rows: list[tuple[str, str]] = [
        ("id", str(record.get("id", ""))),
        ("type", str(record.get("type", ""))),
        ("status", paint_status(str(record.get("status", "")))),
        ("attempts", str(record.get("attempts", 0))
         + (f" (delivery generation {record['generation']})"
            if int(record.get("generation") or 1) > 1 else "")),
        ("owner", f"{record.get('owner', '')} (via {record.get('channel', '?')})"),
        ("queue", str(record.get("delivered_queue") or record.get("queue", ""))),
    ]
    if envelope.get("correlationid") and envelope.get("correlationid") != record.get("id"):
        rows.append(("correlation", str(envelope["correlationid"])))
    if envelope.get("causationid"):
        rows.append(("caused by", str(envelope["causationid"])))
    for label, field in (("accepted", "accepted_at"), ("queued", "queued_at"),
                         ("started", "started_at"), ("finished", "finished_at")):
        if record.get(field):
            rows.append((label, str(record[field])))
    if record.get("next_attempt_at") and record.get("status") in WAITING:
        rows.append(("next attempt", str(record["next_attempt_at"])))
    took = _duration_ms(record.get("accepted_at"), record.get("finished_at"))
    if took is not None:
        rows.append(("took", f"{took:.0f} ms from acceptance"))
    if record.get("error"):
        rows.append(("error", click.style(_error_line(record["error"]), fg="red")))
    elif record.get("last_error"):
        rows.append(("last error", click.style(_error_line(record["last_error"]),
                                               fg="yellow")))
    if record.get("hold"):
        rows.append(("held", json.dumps(record["hold"], default=str)))
    if record.get("result") is not None:
        rows.append(("result", json.dumps(record["result"], default=str)))
    if record.get("topic"):
        rows.append(("event", str(record["topic"])))
    width = max(len(label) for label, _ in rows)
    return [f"{click.style(label.ljust(width), bold=True)}  {value}" for label, value in rows]


def attempt_lines(errors: Sequence[dict[str, Any]]) -> list[str]:
    """Each failed attempt of a dead letter, oldest first."""
    return [f"  {entry.get('at', '')}  attempt {entry.get('attempt', '?')}  "
            + click.style(_error_line(entry), fg="red") for entry in errors]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]],
          styles: dict[int, Callable[[str], str]] | None = None) -> list[str]:
    """Rows under bold headers, columns aligned on the unstyled text, then styled per column
    (``styles`` maps a column index to a styling function)."""
    styles = styles or {}
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str], header: bool = False) -> str:
        out = []
        for i, cell in enumerate(cells):
            padded = cell if i == len(cells) - 1 else cell.ljust(widths[i])
            out.append(click.style(padded, bold=True) if header
                       else styles.get(i, str)(padded))
        return "  ".join(out).rstrip()

    return [line(headers, header=True), *(line(row) for row in rows)]


__all__ = ["STATUS_COLOURS", "attempt_lines", "paint_status", "record_summary", "table"]


def _no_colour(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value:
        ctx.color = False


#: ``--no-color`` on a command as well as on the group (``integration status ID --no-color``).
no_color_option = click.option("--no-color", is_flag=True, expose_value=False,
                               is_eager=True, callback=_no_colour,
                               help="Plain output without colours.")
