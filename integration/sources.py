"""Where settings come from besides the environment, in this order: the environment, the
record of an ``integration up`` stack running from the working directory (``.run/stack.json``),
then a ``.env`` file (``INTEGRATION_ENV_FILE``; empty: none).

The record lets every command of a second terminal talk to the ``make run`` stack without
exports. ``.env`` is the file docker-compose reads; ``integration up`` never takes the keys that
point a process at a deployment (:data:`DEPLOYMENT_KEYS`) from it, so a production ``.env``
cannot leak into a development stack.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: The record of a running stack, under the run directory.
STACK_FILE = "stack.json"
#: The development JWT secret ``integration up`` generates, under the run directory.
DEV_SECRET_FILE = "jwt-secret"
#: Variables that connect a process to a deployment or sign its tokens: a dev stack ignores
#: them in ``.env`` (set them in the environment to use them).
DEPLOYMENT_KEYS = ("INTEGRATION_REDIS_URL", "INTEGRATION_BROKER_URL", "INTEGRATION_JWT_SECRET",
                   "INTEGRATION_ENV", "INTEGRATION_REDIS_SENTINELS",
                   "INTEGRATION_REDIS_SENTINEL_MASTER", "INTEGRATION_REDIS_SENTINEL_PASSWORD")


def run_dir() -> Path:
    """The run directory: ``INTEGRATION_RUN_DIR`` or ``.run`` (read before any other setting)."""
    return Path(os.environ.get("INTEGRATION_RUN_DIR") or ".run")


def env_file() -> Path | None:
    """The dotenv file read after the environment and the stack record (``.env``)."""
    name = os.environ.get("INTEGRATION_ENV_FILE", ".env")
    return Path(name) if name else None


@dataclass
class StackRecord:
    """What ``integration up`` started: the values a command needs to reach it."""

    pid: int
    gateway_url: str
    host: str
    port: int
    redis_url: str
    redis_embedded: bool
    metrics_port: int
    flower_url: str | None = None
    #: The development secret's file, when the stack signs tokens with it (never the secret).
    jwt_secret_file: str | None = None
    console_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def settings(self) -> dict[str, str]:
        """The settings a command takes from the record, as environment variables."""
        values = {"INTEGRATION_REDIS_URL": self.redis_url, "INTEGRATION_HOST": self.host,
                  "INTEGRATION_PORT": str(self.port), "INTEGRATION_ENV": "development"}
        secret = self.secret()
        if secret:
            values["INTEGRATION_JWT_SECRET"] = secret
        return values

    def secret(self) -> str | None:
        if not self.jwt_secret_file:
            return None
        with contextlib.suppress(OSError):
            return Path(self.jwt_secret_file).read_text().strip() or None
        return None

    def write(self, directory: Path) -> Path:
        path = directory / STACK_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2) + "\n")
        temporary.replace(path)
        return path


def process_alive(pid: int) -> bool:
    """Whether a process of that id runs (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recorded_stack(directory: Path | None = None, *, live_only: bool = True
                   ) -> StackRecord | None:
    """The stack recorded in the run directory, or None when there is none, the file is not a
    record, or (``live_only``) the process that wrote it is gone."""
    path = (directory or run_dir()) / STACK_FILE
    try:
        raw = json.loads(path.read_text())
        known = {k: v for k, v in raw.items() if k in StackRecord.__dataclass_fields__}
        record = StackRecord(**known)
    except (OSError, ValueError, TypeError):
        return None
    if live_only and not process_alive(record.pid):
        return None
    return record


def dotenv_values(path: Path | None, *, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """``KEY=value`` lines of a dotenv file (``export`` prefixes, quotes and comments as the
    shell and compose read them); a missing file is empty."""
    if path is None or not path.is_file():
        return {}
    from dotenv import dotenv_values as parse

    return {k: v for k, v in parse(path).items() if v is not None and k not in exclude}


def origin(name: str) -> str:
    """Where the variable ``name`` takes its value from, in words for an error message."""
    if name in os.environ:
        return "the environment"
    record = recorded_stack()
    if record is not None and name in record.settings():
        return f"the running stack's record {run_dir() / STACK_FILE}"
    path = env_file()
    if path is not None and name in dotenv_values(path):
        return str(path)
    return "the default"
