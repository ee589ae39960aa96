"""The schedule file (``INTEGRATION_SCHEDULE_FILE``): read, and each schedule's message
validated as the submit path would."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from integration.messages.envelope import Envelope
from integration.messages.problems import InvalidMessage
from integration.mistakes import file_problem
from integration.schedules.spec import CHANNEL, ScheduleSpec, StoredSchedule
from integration.settings import ConfigurationError

log = logging.getLogger(__name__)


#: Validates a message as the submit path does (``Submitter.parse``).
Parse = Callable[..., Envelope]


class ScheduleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedules: list[dict[str, Any]] = Field(default_factory=list)


def _where(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc) or "(entry)"


def check_message(spec: ScheduleSpec, parse: Parse,
                  may_submit: Callable[[str], bool] | None = None) -> None:
    """Validate the message a schedule fires as the submit path will: ``InvalidMessage``
    (errors located at the schedule's fields) or ``Forbidden``."""
    trial = StoredSchedule(**spec.model_dump(), owner="check", origin="api",
                           created_at="").envelope(datetime.now(UTC))
    parse(trial, may_submit=may_submit, channel=CHANNEL)


def load_schedule_file(path: str | None, parse: Parse) -> list[ScheduleSpec]:
    """Read and validate a schedule file (the shipped one when ``path`` is None); a broken
    file stops beat with every error, naming the file, the entry and the field."""
    label = path or "(default) default_schedule.yaml"
    try:
        text = Path(path).read_text() if path else \
            files("integration.schedules").joinpath("default_schedule.yaml").read_text()
        document = ScheduleFile.model_validate(yaml.safe_load(text) or {})
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigurationError(
            f"INTEGRATION_SCHEDULE_FILE {label} cannot be read: {file_problem(exc)}") from None
    problems: list[str] = []
    specs: list[ScheduleSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(document.schedules):
        entry = f"schedules[{index}]"
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            entry += f" ({raw['name']})"
        try:
            spec = ScheduleSpec.model_validate(raw)
        except ValidationError as exc:
            problems += [f"{entry}: {_where(e['loc'])}: {e['msg']}"
                         for e in exc.errors(include_url=False)]
            continue
        if spec.name in seen:
            problems.append(f"{entry}: name: {spec.name!r} is used twice")
        seen.add(spec.name)
        try:
            check_message(spec, parse)
        except InvalidMessage as problem:
            problems += [f"{entry}: {_where(e['loc'])}: {e['msg']}"
                         for e in problem.extensions.get("errors", [])]
            continue
        specs.append(spec)
    if problems:
        raise ConfigurationError(f"INTEGRATION_SCHEDULE_FILE {label} is invalid:\n  "
                                 + "\n  ".join(problems))
    return specs


# -- schedules in Redis (redbeat entries) --------------------------------------------------
