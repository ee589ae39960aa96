"""Configuration mistakes, command by command: each is one line naming the cause and the
setting to fix, a non-zero exit (or, for the worker and an unreachable Redis, retries), and
never a traceback or a password.

``TABLE`` says which mistakes apply to which command; a command a mistake does not touch is
not in its row. CLI cells run in this process (click's runner); the worker, beat and the
gateway's port run as processes, all at once.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from integration import app as composition
from integration.ops.cli import main
from integration.ops.embedded_redis import EmbeddedRedis, free_port
from integration.security.tokens import issue_token
from tests.conftest import ROOT, TEST_SECRET, wait_for

PASSWORD = "right-password-never-shown"
WRONG = "wrong-password-never-shown"


@dataclass(frozen=True)
class Mistake:
    """Environment that makes the mistake, a pattern of the line naming its cause, and the
    setting that line must name."""

    env: Callable[[Lab], dict[str, str | None]]
    cause: str
    setting: str


@dataclass
class Lab:
    """What the mistakes need: a Redis with requirepass, a port in use, broken files."""

    redis: EmbeddedRedis
    busy_port: int
    files: dict[str, str]

    @property
    def good_url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.redis.port}/0"


def _file_mistake(setting: str, variant: str) -> Mistake:
    return Mistake(lambda lab: {setting: lab.files[variant]},
                   r"cannot be read|is not a valid policy", setting)


MISTAKES: dict[str, Mistake] = {
    "no scheme": Mistake(lambda lab: {"INTEGRATION_REDIS_URL": f"127.0.0.1:{lab.redis.port}"},
                         "has no scheme", "INTEGRATION_REDIS_URL"),
    "unreachable": Mistake(
        lambda lab: {"INTEGRATION_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"},
        "cannot reach|does not answer", "INTEGRATION_REDIS_URL"),
    "wrong password": Mistake(
        lambda lab: {"INTEGRATION_REDIS_URL":
                     f"redis://:{WRONG}@127.0.0.1:{lab.redis.port}/0"},
        "refused the credentials", "INTEGRATION_REDIS_URL"),
    "type module": Mistake(lambda lab: {"INTEGRATION_TYPE_MODULES": "tests.support.fault_types:"
                                        "TYPES,no_such_types_module:TYPES"},
                           "no module 'no_such_types_module'", "INTEGRATION_TYPE_MODULES"),
    "no jwt secret": Mistake(lambda lab: {"INTEGRATION_JWT_SECRET": None},
                             "JWT_SECRET is not set|no token", "INTEGRATION_JWT_SECRET"),
    "port in use": Mistake(lambda lab: {"INTEGRATION_PORT": str(lab.busy_port),
                                        "INTEGRATION_METRICS_PORT": str(lab.busy_port)},
                           "cannot listen on", "_PORT"),
    **{f"policy {v}": _file_mistake("INTEGRATION_POLICY_FILE", v)
       for v in ("missing", "directory", "unreadable", "invalid")},
    **{f"rules {v}": _file_mistake("INTEGRATION_RULES_FILE", v)
       for v in ("missing", "directory", "unreadable", "invalid")},
    **{f"schedule {v}": _file_mistake("INTEGRATION_SCHEDULE_FILE", v)
       for v in ("missing", "directory", "unreadable", "invalid")},
}

REDIS = {"no scheme", "unreachable", "wrong password"}
FILES = {"missing", "directory", "unreadable", "invalid"}
POLICY, RULES, SCHEDULE = ({f"{kind} {v}" for v in FILES} for kind in ("policy", "rules",
                                                                        "schedule"))
#: Which mistakes each command meets (the others it does not read). "no jwt secret" in
#: ``NO_SECRET_NEEDED`` rows: the command works without one.
TABLE: dict[str, set[str]] = {
    "serve": REDIS | {"type module", "no jwt secret", "port in use"} | POLICY,
    "up": REDIS | {"type module", "port in use"} | POLICY | RULES | SCHEDULE,
    "check": REDIS | {"type module", "no jwt secret"} | POLICY | RULES | SCHEDULE,
    "status": REDIS,
    "trace": REDIS,
    "token issue": {"no scheme", "no jwt secret"},
    "token revoke": REDIS | {"no jwt secret"},
    "token inspect": {"no scheme", "no jwt secret"},
    "dlq list": REDIS | {"type module", "no jwt secret"},
    "schedule list": REDIS | {"type module", "no jwt secret"},
    "schedule create": REDIS | {"type module"},
    "demo": {"no scheme", "no jwt secret"},
    # The worker and beat read one file variant each (the loader is the same for all four).
    # Both read the settings and the types through one Celery loader (tasks.startup.Loader):
    # the worker's cells cover it, beat's are what it checks itself.
    "worker": REDIS | {"type module", "port in use", "policy missing", "rules invalid"},
    "beat": {"unreachable", "wrong password", "schedule directory"},
}
NO_SECRET_NEEDED = {"token revoke", "dlq list", "schedule list"}

ARGS: dict[str, list[str]] = {
    "serve": ["serve"],
    "up": ["up", "--no-beat"],
    "check": ["check", "--timeout", "1"],
    "status": ["status", "0" * 32],
    "trace": ["trace", "0" * 32],
    "token issue": ["token", "issue", "--sub", "alice"],
    "token revoke": ["token", "revoke", "0" * 32],
    "token inspect": ["token", "inspect", issue_token(TEST_SECRET, "alice", ["admin"], 60)],
    "dlq list": ["dlq", "list"],
    "schedule list": ["schedule", "list"],
    "schedule create": ["schedule", "create", "errors-test", "--every", "1h", "--type",
                        "metric", "--data", '{"name": "n", "value": 1}', "--paused"],
    "demo": ["demo", "--timeout", "1"],
}

CELLS = [(command, mistake) for command, mistakes in TABLE.items()
         for mistake in sorted(mistakes)]
#: Cells run as processes: the Celery programs, and the gateway's port (gunicorn's own).
PROCESS_CELLS = [(c, m) for c, m in CELLS if c in ("worker", "beat")] + [("serve",
                                                                          "port in use")]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("mistakes")
    (base / "a-directory").mkdir()
    (base / "invalid.yaml").write_text("schedules: [\n")
    unreadable = base / "unreadable.yaml"
    unreadable.write_text("roles: {}\n")
    unreadable.chmod(0)
    files = {"missing": str(base / "missing.yaml"), "directory": str(base / "a-directory"),
             "unreadable": str(unreadable), "invalid": str(base / "invalid.yaml")}
    with EmbeddedRedis(base / "redis", persistent=False,
                       extra_args=("--requirepass", PASSWORD)) as server, \
            socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield Lab(server, busy.getsockname()[1], files)


def _overrides(lab: Lab, mistake: Mistake, tmp_path: Path) -> dict[str, str | None]:
    """The private Redis, with the mistake made (None: the variable is unset)."""
    return {"INTEGRATION_REDIS_URL": lab.good_url, "INTEGRATION_RUN_DIR": str(tmp_path / "run"),
            "NO_COLOR": "1", **mistake.env(lab)}


def _environment(lab: Lab, mistake: Mistake, tmp_path: Path) -> dict[str, str]:
    """This process's environment with those overrides, for a child process."""
    overrides = _overrides(lab, mistake, tmp_path)
    env = {**os.environ, **{k: v for k, v in overrides.items() if v is not None}}
    return {k: v for k, v in env.items() if overrides.get(k, "") is not None}


def _clear_caches() -> None:
    for value in vars(composition).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()


def _skip_unreadable_as_root(mistake: str) -> None:
    if mistake.endswith("unreadable") and os.geteuid() == 0:
        pytest.skip("root reads a file without read permission")


def _assert_one_line(output: str, mistake: Mistake, where: str) -> None:
    assert "Traceback" not in output, f"{where}:\n{output[-3000:]}"
    assert PASSWORD not in output and WRONG not in output, where
    lines = [line for line in output.splitlines() if re.search(mistake.cause, line)]
    assert len(lines) == 1, f"{where}: {len(lines)} lines name the cause:\n{output[-3000:]}"
    assert mistake.setting in lines[0], f"{where}: {lines[0]}"


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, lab: Lab, tmp_path: Path) -> Iterator[Any]:
    """Runs one command in this process; ``serve`` and ``up`` stop before they would start
    anything (the gateway's logging and metrics stay out of this process)."""
    import integration.ops.commands.running as running
    import integration.ops.devstack as devstack
    import integration.ops.server as server

    def never(*_: Any, **__: Any) -> Any:
        raise AssertionError("started although the configuration is wrong")

    monkeypatch.setattr(server, "serve", never)
    monkeypatch.setattr(devstack, "run_stack", never)
    monkeypatch.setattr(server, "prepare_metrics_dir", lambda settings: settings)
    monkeypatch.setattr(running, "configure_logging", lambda settings: None)
    path = list(sys.path)

    def run(command: str, mistake: Mistake) -> Any:
        _clear_caches()
        result = CliRunner().invoke(main, ARGS[command],
                                    env=_overrides(lab, mistake, tmp_path))
        _clear_caches()
        return result

    yield run
    sys.path[:] = path
    _clear_caches()


@pytest.mark.parametrize(("command", "mistake"),
                         [c for c in CELLS if c not in PROCESS_CELLS
                          and not (c[1] == "no jwt secret" and c[0] in NO_SECRET_NEEDED)])
def test_cli_mistake_is_one_line(run_cli: Any, command: str, mistake: str) -> None:
    """The command exits 1 with one line naming the cause and the setting, no traceback."""
    _skip_unreadable_as_root(mistake)
    result = run_cli(command, MISTAKES[mistake])
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 1, output
    _assert_one_line(output, MISTAKES[mistake], f"{command} × {mistake}")


@pytest.mark.parametrize("command", sorted(NO_SECRET_NEEDED))
def test_commands_that_need_no_secret_work_without_one(run_cli: Any, command: str) -> None:
    """Commands that sign and verify nothing work without INTEGRATION_JWT_SECRET."""
    result = run_cli(command, MISTAKES["no jwt secret"])
    assert result.exit_code == 0, result.output
    assert "JWT_SECRET" not in result.output


def test_type_modules_import_from_the_working_directory(
        run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A type module beside the operator, not installed, loads in every command (as under
    `python -m integration` and `celery -A tasks`), not only under `integration up`."""
    (tmp_path / "local_types_for_test.py").write_text("TYPES = []\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "local_types_for_test", raising=False)
    modules = Mistake(lambda lab: {"INTEGRATION_TYPE_MODULES": "local_types_for_test:TYPES"},
                      "", "")
    for command in ("dlq list", "schedule list"):
        result = run_cli(command, modules)
        assert result.exit_code == 0, result.output
    sys.modules.pop("local_types_for_test", None)


def test_worker_beat_and_gateway_name_each_mistake_in_one_line(lab: Lab,
                                                               tmp_path: Path) -> None:
    """Each worker and beat cell (and the gateway's port) started at once: a mistake stops
    it with exit 1 and one line; an unreachable broker and a metrics port in use are one
    line while the worker keeps running (the latter without INTEGRATION_JWT_SECRET, which a
    worker does not need)."""
    keeps_running = {("worker", "unreachable"), ("worker", "port in use")}
    # The worker that gets as far as its metrics port goes first: it has the longest way.
    cells = sorted(PROCESS_CELLS, key=lambda cell: cell != ("worker", "port in use"))
    started = {cell: _start(*cell, lab, tmp_path) for cell in cells}
    try:
        for (command, mistake), (process, log) in started.items():
            cell = f"{command} × {mistake}"
            if (command, mistake) in keeps_running:
                wait_for(lambda log=log, mistake=mistake: re.search(  # type: ignore[misc]
                    MISTAKES[mistake].cause, log.read_text(errors="replace")), timeout=60,
                    message=f"{cell}: its line")
                assert process.poll() is None, f"{cell} exited:\n{log.read_text()[-3000:]}"
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=20)
            else:
                assert process.wait(timeout=60) != 0, cell
            _assert_one_line(log.read_text(errors="replace"), MISTAKES[mistake], cell)
    finally:
        for process, _ in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def _start(command: str, mistake: str, lab: Lab,
           tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    directory = tmp_path / f"{command}-{mistake.replace(' ', '-')}"
    directory.mkdir()
    env = _environment(lab, MISTAKES[mistake], directory)
    if command == "worker" and mistake != "port in use":
        env["INTEGRATION_METRICS_PORT"] = "0"
    if command == "worker" and mistake == "port in use":
        env.pop("INTEGRATION_JWT_SECRET", None)  # it needs none: it runs without one
    argv = {"worker": [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool",
                       "solo", "--without-gossip", "--without-mingle", "--hostname",
                       f"errors-{time.monotonic_ns()}@%h", "--loglevel", "INFO"],
            "beat": [sys.executable, "-m", "celery", "-A", "tasks", "beat", "--loglevel",
                     "INFO", "--schedule", str(directory / "beat-schedule")],
            "serve": [sys.executable, "-m", "integration", "serve"]}[command]
    log = directory / "output.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    return process, log
