"""The `integration` command against the real test Redis and worker: output, colours, exits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from integration.app import get_settings
from integration.ops.cli import main
from integration.ops.client import Client
from tests.conftest import wait_for

ANSI = "\x1b["
GREEN, RED = "\x1b[32m", "\x1b[31m"


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Runs the command as a terminal would (colours on) unless NO_COLOR is set."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    get_settings.cache_clear()

    def run(*args: str, color: bool = True, input: str | None = None) -> Result:
        get_settings.cache_clear()
        return CliRunner().invoke(main, list(args), color=color, input=input)

    yield run
    get_settings.cache_clear()


@pytest.fixture
def bus(worker: Any) -> Client:
    return Client(get_settings())


def _finished(bus: Client, message_id: str, status: str) -> dict[str, Any]:
    return wait_for(lambda: (r := bus.status(message_id)) and r["status"] == status and r,
                    message=f"{message_id} {status}")


def _flaky(bus: Client, fail_times: int = 0, kind: str = "transient") -> str:
    return bus.submit("test.flaky", {"key": uuid.uuid4().hex, "fail_times": fail_times,
                                     "kind": kind}, source="cli-test")


def test_status_of_a_processed_message_is_a_coloured_summary(cli: Any, bus: Client) -> None:
    """`status ID` shows type, a green `succeeded`, attempts and times; exit 0."""
    message_id = _flaky(bus, fail_times=1)
    _finished(bus, message_id, "succeeded")

    result = cli("status", message_id)
    assert result.exit_code == 0, result.output
    assert f"{GREEN}succeeded" in result.stdout
    plain = click.unstyle(result.stdout)
    assert message_id in plain and "test.flaky" in plain
    assert any(line.split()[:2] == ["attempts", "2"] for line in plain.splitlines())
    for label in ("accepted", "started", "finished", "took", "last error"):
        assert any(line.startswith(label) for line in plain.splitlines()), label


def test_status_of_a_dead_message_shows_its_error_in_red(cli: Any, bus: Client) -> None:
    """A dead message's status is red and its error is on the summary."""
    message_id = _flaky(bus, fail_times=1, kind="permanent")
    _finished(bus, message_id, "dead")

    result = cli("status", message_id)
    assert result.exit_code == 0
    assert f"{RED}" in result.stdout and "PermanentError: failure 1 of 1" in result.stdout


def test_no_color_and_json_are_plain(cli: Any, bus: Client,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_COLOR (any value), --no-color and --json give output without escape codes;
    --json is the whole record with its history."""
    message_id = _flaky(bus)
    _finished(bus, message_id, "succeeded")

    raw = cli("status", message_id, "--json")
    record = json.loads(raw.stdout)
    assert record["id"] == message_id and record["status"] == "succeeded"
    assert [step["status"] for step in record["history"]][:2] == ["accepted", "queued"]
    assert "request" not in record, "internal fields stay out"

    assert ANSI not in cli("--no-color", "status", message_id).stdout
    assert ANSI not in cli("trace", message_id, "--no-color").stdout
    monkeypatch.setenv("NO_COLOR", "0")  # no-color.org: any non-empty value
    assert ANSI not in cli("status", message_id).stdout
    assert ANSI not in cli("trace", message_id).stdout
    monkeypatch.setenv("NO_COLOR", "")
    assert ANSI in cli("status", message_id).stdout


def test_trace_renders_the_loop_as_a_tree_with_durations(cli: Any, bus: Client) -> None:
    """`trace ID` of a metric shows the messages it caused, indented under it, each with
    its coloured status and durations; --json has the same tree."""
    message_id = bus.submit("metric", {"name": "cpu_usage_percent", "value": 99.0,
                                       "labels": {"host": f"cli-{uuid.uuid4().hex[:6]}"}},
                            source="cli-test")

    def complete() -> dict[str, Any] | None:
        found = json.loads(cli("trace", message_id, "--json").stdout)
        nodes, todo = [], [found]
        while todo:
            node = todo.pop()
            nodes.append(node)
            todo += node["caused"]
        done = any(n["type"] == "action.result" and n["status"] == "succeeded" for n in nodes)
        return found if done else None

    tree = wait_for(complete, timeout=30, message="the loop to reach action.result")
    assert tree["id"] == message_id and tree["caused"]

    result = cli("trace", message_id)
    assert result.exit_code == 0
    lines = click.unstyle(result.stdout).splitlines()
    assert lines[0].startswith(f"metric {message_id}  succeeded")
    assert lines[0].endswith(" ms")
    child = next(line for line in lines if line.lstrip().startswith("alert "))
    assert child.startswith("    "), "a caused message is indented under its cause"
    assert any("ms  processing" in line for line in lines)
    assert f"{GREEN}succeeded" in result.stdout


def test_unknown_id_exits_1_with_a_message_on_stderr(cli: Any) -> None:
    """status, trace and dlq show of an unknown id: exit 1, one line on stderr, no stdout."""
    unknown = uuid.uuid4().hex
    for args in (("status", unknown), ("trace", unknown), ("dlq", "show", unknown),
                 ("status", unknown, "--json")):
        result = cli(*args)
        assert result.exit_code == 1, args
        assert result.stdout == ""
        assert result.stderr.strip().splitlines() == [result.stderr.strip()]
        assert unknown in result.stderr and result.stderr.startswith("Error: no ")


def test_unreachable_redis_is_one_line_and_exit_1(cli: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With Redis down, commands that need it fail with one line naming the problem."""
    from integration.ops.embedded_redis import free_port

    monkeypatch.setenv("INTEGRATION_REDIS_URL",
                       f"redis://:not-for-logs@127.0.0.1:{free_port()}/0")
    for args in (("status", "x"), ("trace", "x"), ("dlq", "list"), ("token", "revoke", "x")):
        result = cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith("Error: cannot reach Redis at 127.0.0.1:"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.output and "not-for-logs" not in result.output


def test_usage_errors_exit_2(cli: Any) -> None:
    """An unknown command or a missing argument is a usage error: exit 2."""
    assert cli("no-such-command").exit_code == 2
    assert cli("status").exit_code == 2
    assert cli("dlq", "replay").exit_code == 2


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name)


def test_every_command_has_a_one_line_summary_and_examples(cli: Any) -> None:
    """`--help` of every command and group has a one-line summary and an Examples section."""
    paths = list(_commands(main))
    assert {("up",), ("serve",), ("token", "issue"), ("token", "revoke"), ("token", "inspect"),
            ("dlq", "list"), ("dlq", "show"), ("dlq", "replay"), ("dlq", "purge"),
            ("status",), ("trace",), ("demo",)} <= set(paths)
    for path in paths:
        result = cli(*path, "--help", color=False)
        assert result.exit_code == 0, path
        assert "Examples" in result.stdout, f"no examples in `{' '.join(path)} --help`"
        summary = result.stdout.split("\n\n")[1].strip()
        assert "\n" not in summary, f"`{' '.join(path)}`: the summary is one line"


def test_dead_letters_table_json_replay_and_purge(cli: Any, bus: Client) -> None:
    """`dlq list` is a table with the error, --json the records; a replay by type runs them
    again; an unknown id to replay exits 1; purge reports what it deleted."""
    dead = [_flaky(bus, fail_times=1, kind="permanent") for _ in range(3)]
    for message_id in dead:
        _finished(bus, message_id, "dead")

    result = cli("dlq", "list", "--type", "test.flaky")
    assert result.exit_code == 0
    lines = click.unstyle(result.stdout).splitlines()
    assert lines[0].split() == ["ID", "TYPE", "ATTEMPTS", "FINISHED", "ERROR"]
    assert {line.split()[0] for line in lines[1:]} >= set(dead)
    assert f"{RED}PermanentError" in result.stdout
    assert "dead letter(s)" in result.stderr
    listed = json.loads(cli("dlq", "list", "--type", "test.flaky", "--json").stdout)
    assert set(dead) <= {item["id"] for item in listed}

    shown = cli("dlq", "show", dead[0])
    assert shown.exit_code == 0 and "attempt 1" in click.unstyle(shown.stdout)

    missing = cli("dlq", "replay", dead[0], uuid.uuid4().hex)
    assert missing.exit_code == 1 and "not dead letters" in missing.stderr
    assert "replayed 1 dead letter(s)" in missing.stdout
    replayed = cli("dlq", "replay", "--type", "test.flaky")
    assert replayed.exit_code == 0 and "replayed" in replayed.stdout
    for message_id in dead:  # a second attempt succeeds (fail_times=1)
        _finished(bus, message_id, "succeeded")

    doomed = _flaky(bus, fail_times=5, kind="permanent")
    _finished(bus, doomed, "dead")
    refused = cli("dlq", "purge", "--type", "test.flaky", input="n\n")
    assert refused.exit_code == 1 and bus.status(doomed) is not None, "asks before deleting"
    purged = cli("dlq", "purge", "--type", "test.flaky", "--yes")
    assert purged.exit_code == 0 and "purged" in purged.stdout
    assert bus.status(doomed) is None


def test_an_invalid_setting_is_one_line_and_check_still_lists_it(
    cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command reading an invalid setting names the variable in one line (exit 1), while
    `check` still gets to report it in its own listing."""
    monkeypatch.setenv("INTEGRATION_PORT", "not-a-port")
    result = cli("status", "x")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: invalid setting INTEGRATION_PORT: ")
    assert "Traceback" not in result.output
    checked = cli("check", "--offline", color=False)
    assert checked.exit_code == 1 and "INTEGRATION_PORT" in checked.stdout
