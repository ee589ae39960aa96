"""The ``integration`` command: its group, and the table of its commands (each in
``integration.ops.commands``)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from integration import logs
from integration.app import get_settings
from integration.mistakes import explain
from integration.ops.commands import (
    check,
    dead_letters,
    demo,
    messages,
    running,
    schedules,
    tokens,
)
from integration.settings import Settings


class CommandGroup(click.Group):
    """The ``integration`` group: a configuration mistake (an invalid setting, an unreachable
    Redis or a wrong password, an unreadable file, a missing type module, a port in use) is
    one line on stderr naming the cause and the fix, and exit status 1, in every command,
    never a traceback (``integration.mistakes`` words each)."""

    def invoke(self, ctx: click.Context) -> Any:
        # Type and consumer modules in the working directory import as under `python -m
        # integration` and `celery -A tasks` (which put it first on the path), and in every
        # command alike.
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            line = explain(exc, _settings_or_none())
            if line is None:
                raise
            raise click.ClickException(line) from None


def _settings_or_none() -> Settings | None:
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError:
        return None


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
      eval "$(integration env)"               # its settings, for other tools
      integration status 3f2a9c…              # how is my message doing?
      integration status 3f2a9c… --json       # the same as one JSON document, for scripts
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

    logs.configure_command_line()
    _warn_of_a_stopped_stack(ctx.invoked_subcommand)

    # An invalid setting is left to the command: `check` lists them all, others name one.
    with suppress(ValidationError):
        no_color = no_color or bool(get_settings().no_color)
    if no_color:
        ctx.color = False  # inherited by every subcommand's context


def _warn_of_a_stopped_stack(command: str | None) -> None:
    """A record left by a stack that is gone: say which Redis is used instead of it."""
    import logging

    from integration import sources

    if command in ("up", "serve", "env", "flower") or sources.recorded_stack() is not None:
        return
    stale = sources.recorded_stack(live_only=False)
    if stale is not None:
        logging.getLogger("integration").warning(
            "the stack recorded in %s (process %s) is not running; INTEGRATION_REDIS_URL "
            "comes from %s (start `make run` to use a development stack)",
            sources.run_dir() / sources.STACK_FILE, stale.pid,
            sources.origin("INTEGRATION_REDIS_URL"))


main.add_command(running.up)
main.add_command(running.serve)
main.add_command(running.flower)
main.add_command(running.env_command)
main.add_command(check.check)
main.add_command(messages.status_command)
main.add_command(messages.trace_command)
main.add_command(dead_letters.dlq)
main.add_command(schedules.schedule)
main.add_command(tokens.token)
main.add_command(demo.demo)


if __name__ == "__main__":  # pragma: no cover
    main()
