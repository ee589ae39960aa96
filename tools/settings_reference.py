"""The configuration reference, ``docs/configuration.md``, generated from ``Settings``.

Each field's ``#:`` comment is its description and the ``# -- title --`` line above it its
section, so the page cannot drift from the code: ``make docs`` writes it, and
``tests/unit/test_docs.py`` fails when the committed page is not what this makes.

    python -m tools.settings_reference            # write docs/configuration.md
    python -m tools.settings_reference --check    # exit 1 when it is not current
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from integration.settings import Settings

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
PREFIX = "INTEGRATION_"

_SECTION = re.compile(r"^\s*# -- (?P<title>.+?)\s*-*\s*$")
_FIELD = re.compile(r"^\s*(?P<name>[a-z_][a-z0-9_]*)\s*:")

HEADER = """\
# Configuration

Every setting is an environment variable, read in one place, `integration/settings.py`; every
other part of the service receives the settings from it. The prefix is `INTEGRATION_`, except
for the few variables other tools define too (`FLOWER_BASIC_AUTH`, `GRAFANA_ADMIN_PASSWORD`,
`REDIS_EXPORTER_PASSWORD`, `NO_COLOR`, `PROMETHEUS_MULTIPROC_DIR`). An invalid value stops
the process at start with the variable's name; `integration check` reports every one of them
before anything starts ([operations](operations.md#integration-check)). A variable not set in
the environment is read from the record of a running `integration up` stack, then from `.env`
([the order](operations.md#one-configuration-for-the-stack-and-every-command)).

Besides these, `INTEGRATION_SECRET_<NAME>` holds a secret that a target of the rules file
names as `${NAME}` ([egress](egress.md#action-targets)). The Celery settings derived from
these are in `celeryconfig.py` (`python -m celeryconfig` checks that it loads).

!!! note "Generated"
    This page is generated from the descriptions in `integration/settings.py` by `make docs`
    (`python -m tools.settings_reference`); edit them there. A test fails when the page is
    not current.
"""


@dataclass(frozen=True)
class Entry:
    """One setting as the page shows it."""

    name: str
    variable: str
    type: str
    default: str
    description: str
    section: str | None


def entries(model: type[BaseModel] = Settings) -> list[Entry]:
    """Every field of ``model`` in source order, with its ``#:`` description and section."""
    lines, _ = inspect.getsourcelines(model)
    fields = model.model_fields
    found: list[Entry] = []
    section: str | None = None
    comment: list[str] = []
    for line in lines:
        stripped = line.strip()
        if match := _SECTION.match(line):
            section, comment = match["title"], []
        elif stripped.startswith("#:"):
            comment.append(stripped[2:].strip())
        elif (match := _FIELD.match(line)) and match["name"] in fields:
            name = match["name"]
            field = fields[name]
            found.append(Entry(name, _variable(name, field), _type(field), _default(field),
                               _markdown(" ".join(comment)), section))
            comment = []
        else:
            comment = []
    return found


def problems(found: list[Entry], model: type[BaseModel] = Settings) -> list[str]:
    """What keeps the page from being complete: fields without a description or section."""
    missing = sorted(set(model.model_fields) - {entry.name for entry in found})
    return ([f"{name}: not found in the source" for name in missing]
            + [f"{entry.name}: no #: description" for entry in found if not entry.description]
            + [f"{entry.name}: in no '# -- section --'" for entry in found if not entry.section])


def render(model: type[BaseModel] = Settings) -> str:
    """The whole page."""
    found = entries(model)
    if trouble := problems(found, model):
        raise ValueError("settings the reference cannot describe: " + "; ".join(trouble))
    parts = [HEADER]
    current: str | None = None
    for entry in found:
        if entry.section != current:
            current = entry.section
            parts.append(f"\n## {_heading(current or '')}\n\n"
                         "| variable | type | default | description |\n|---|---|---|---|\n")
        parts.append(f"| `{entry.variable}` | {entry.type} | {entry.default} | "
                     f"{entry.description} |\n")
    return "".join(parts)


def _heading(title: str) -> str:
    # "durability: the status store is the ledger ..." -> "Durability"
    head = title.split(":", 1)[0].strip()
    return head[:1].upper() + head[1:]


def _variable(name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    return alias if isinstance(alias, str) else PREFIX + name.upper()


def _type(field: FieldInfo) -> str:
    annotation: Any = field.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    if get_origin(annotation) is Literal:
        text = "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    else:
        text = {bool: "boolean", int: "integer", float: "number", str: "string",
                SecretStr: "secret"}.get(annotation, getattr(annotation, "__name__", "?"))
    bounds = []
    for item in field.metadata:
        for attribute, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if isinstance(item, getattr(annotated_types, attribute.title())):
                bounds.append(f"{sign} {_number(getattr(item, attribute))}")
        if pattern := getattr(item, "pattern", None):
            bounds.append(f"matching `{pattern}`")
    return text + (", " + ", ".join(bounds) if bounds else "")


def _default(field: FieldInfo) -> str:
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, int | float):
        return f"`{_number(value)}`"
    if value == "":
        return "empty"
    return f"`{value}`"


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _markdown(text: str) -> str:
    # reStructuredText literals to Markdown's; a pipe would end the table cell.
    return text.replace("``", "`").replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.settings_reference",
                                     description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the page is not what the settings make")
    parser.add_argument("--output", type=Path, default=PAGE, help="the page (%(default)s)")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != page:
            print(f"{args.output} is not current: run `make docs`", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(page, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
