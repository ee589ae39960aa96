"""Values the command line checks against this deployment: message types (the registry) and
roles (the policy). A value that is neither is a usage error (exit 2) that lists the known
ones and suggests the closest."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

import click
from click.shell_completion import CompletionItem
from pydantic import ValidationError

from integration.app import default_registry, get_settings
from integration.security.policy import load_policy
from integration.settings import ConfigurationError


def known_types() -> list[str]:
    """Every registered message type: built-in, installed, configured, consumers, webhooks."""
    return sorted(default_registry().names())


def known_roles() -> list[str]:
    """The roles of INTEGRATION_POLICY_FILE (or of the shipped policy)."""
    return sorted(load_policy(get_settings().policy_file).roles)


def policy_origin() -> str:
    """Where the roles come from, as an operator would look for it."""
    path = get_settings().policy_file
    return f"INTEGRATION_POLICY_FILE {path}" if path else "the shipped policy"


def unknown(what: str, value: str, known: Iterable[str], origin: str = "") -> str:
    """``unknown role 'x'; did you mean 'y'? Known roles (origin): ...``"""
    names = sorted(known)
    close = difflib.get_close_matches(value, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    listed = ", ".join(names) if names else "(none)"
    return f"unknown {what} {value!r}{hint} Known {what}s{f' ({origin})' if origin else ''}: " \
           f"{listed}"


class KnownName(click.ParamType):
    """A name that must be one of a list read from the deployment when the option is used."""

    def __init__(self, what: str, metavar: str, names: Callable[[], list[str]],
                 origin: Callable[[], str] | None = None) -> None:
        self.what = what
        self.name = what
        self.metavar = metavar
        self.names = names
        self.origin = origin

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return self.metavar

    def shell_complete(self, ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[CompletionItem]:
        """The known names, for shells with click's completion enabled."""
        try:
            names = self.names()
        except (ConfigurationError, ValidationError):
            return []
        return [CompletionItem(name) for name in names if name.startswith(incomplete)]

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        text = str(value)
        try:
            names = self.names()
            if text in names:
                return text
            origin = self.origin() if self.origin else ""
        except ConfigurationError as exc:
            raise click.ClickException(str(exc)) from None
        self.fail(unknown(self.what, text, names, origin), param, ctx)


#: ``--type``: a registered message type.
MESSAGE_TYPE = KnownName("message type", "TYPE", known_types)
#: ``--role``: a role of the policy.
ROLE = KnownName("role", "ROLE", known_roles, policy_origin)
