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
from integration.security.revocations import Revocations
from integration.security.tokens import issue_token
from integration.store.records import store_from_settings
from tests.conftest import TEST_SECRET, wait_for

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

    record = _one_document(cli("status", message_id, "--json"))
    assert record["id"] == message_id and record["status"] == "succeeded"
    assert [step["status"] for step in record["history"]][:2] == ["accepted", "queued"]
    assert "request" not in record, "internal fields stay out"

    found = _one_document(cli("trace", message_id, "--json"))
    assert found["id"] == message_id and found["status"] == "succeeded"
    assert set(found) == {"id", "type", "status", "owner", "correlationid", "causationid",
                          "attempts", "duration_ms", "timeline", "caused"}

    assert ANSI not in cli("--no-color", "status", message_id).stdout
    traced = cli("trace", message_id, "--no-color")
    assert ANSI not in traced.stdout
    assert "{'" not in traced.stdout and "channel=" in traced.stdout, "name=value, no reprs"
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
    for args in (("status", "x"), ("trace", "x"), ("dlq", "list"),
                 ("token", "revoke", uuid.uuid4().hex)):
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
    document = _one_document(cli("dlq", "show", dead[0], "--json"))
    assert document["id"] == dead[0] and document["status"] == "dead"
    assert document["attempt_errors"][0]["type"] == "PermanentError"

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


def _one_document(result: Result) -> Any:
    """The one JSON document a --json command printed (nothing else on stdout), its keys
    sorted so that the same data always prints the same."""
    assert result.exit_code in (0, 1), result.output
    document = json.loads(result.stdout)
    assert result.stdout == json.dumps(document, indent=2, sort_keys=True) + "\n"
    assert ANSI not in result.stdout
    return document


def test_unknown_message_types_are_usage_errors(cli: Any) -> None:
    """Every --type is checked against the registry: exit 2, the known types listed and the
    closest suggested, before anything is read or changed."""
    for args in (("dlq", "list"), ("dlq", "replay"), ("dlq", "purge", "--yes"),
                 ("schedule", "list"), ("schedule", "create", "x", "--every", "1m")):
        result = cli(*args, "--type", "alrt", color=False)
        assert result.exit_code == 2, (args, result.output)
        assert "unknown message type 'alrt'; did you mean 'alert'?" in result.stderr, args
        listed = " ".join(result.stderr.split())
        assert "Known message types:" in listed and "metric, " in listed and "test.flaky" in listed
    bogus = cli("dlq", "list", "--type", "bogus", color=False)
    assert bogus.exit_code == 2 and "did you mean" not in bogus.stderr
    assert bogus.stdout == ""


def test_token_issue_refuses_a_role_the_policy_does_not_define(cli: Any) -> None:
    """`token issue --role superuser` is a usage error listing the policy's roles; a known
    role gives a token."""
    result = cli("token", "issue", "--sub", "x", "--role", "superuser", color=False)
    assert result.exit_code == 2 and result.stdout == ""
    assert "unknown role 'superuser'" in result.stderr
    assert "admin, diagnosis, executor, monitoring, operator, planner, reader" in \
        " ".join(result.stderr.split())
    close = cli("token", "issue", "--sub", "x", "--role", "operater", color=False)
    assert close.exit_code == 2 and "did you mean 'operator'?" in close.stderr
    assert cli("token", "issue", "--sub", "x", "--role", "operator").exit_code == 0


def _revocations() -> Revocations:
    settings = get_settings()
    return Revocations(store_from_settings(settings).client, settings.key_prefix, 3600)


def test_token_revoke_refuses_what_is_neither_token_jti_nor_subject(cli: Any) -> None:
    """A word that is no JWT and no jti is refused (exit 2, saying what was expected and
    naming --force) and nothing is revoked; --force revokes it as a jti; a jti is taken."""
    refused = cli("token", "revoke", "not-a-jti", color=False)
    assert refused.exit_code == 2 and refused.stdout == ""
    message = " ".join(refused.stderr.split())
    for expected in ("a JWT", "32 lowercase hexadecimal digits", "--subject", "--force"):
        assert expected in message, expected
    assert not _revocations().is_revoked("not-a-jti")

    other = f"idp-{uuid.uuid4().hex[:8]}:42"
    forced = cli("token", "revoke", "--force", other)
    assert forced.exit_code == 0, forced.output
    assert _revocations().is_revoked(other)
    jti = uuid.uuid4().hex
    assert cli("token", "revoke", jti).exit_code == 0 and _revocations().is_revoked(jti)


def test_token_inspect_says_valid_revoked_expired_or_badly_signed(cli: Any) -> None:
    """`token inspect` shows the claims and the verdict: a fresh token is valid (exit 0);
    after its revocation, on expiry and with another key's signature it exits 1 and says
    why; --json is one document with the same verdict."""
    subject = f"inspect-{uuid.uuid4().hex[:8]}"
    token = cli("token", "issue", "--sub", subject, "--role", "reader").stdout.strip()

    fresh = cli("token", "inspect", token, color=False)
    assert fresh.exit_code == 0, fresh.output
    lines = fresh.stdout.splitlines()
    assert lines[0].split() == ["subject", subject]
    assert lines[-1].split() == ["status", "valid"]
    assert any(line.split()[:2] == ["signature", "verified"] for line in lines)
    document = _one_document(cli("token", "inspect", token, "--json"))
    assert sorted(document) == ["claims", "expired", "problems", "revoked", "signature",
                                "unknown_roles", "valid"]
    assert document["valid"] and document["signature"] == "verified"
    assert document["unknown_roles"] == []
    assert document["claims"]["sub"] == subject and document["claims"]["roles"] == ["reader"]

    assert cli("token", "revoke", token).exit_code == 0
    revoked = cli("token", "inspect", token, color=False)
    assert revoked.exit_code == 1
    assert subject in revoked.stdout, "the claims are still shown"
    assert "revoked by its jti" in revoked.stdout and "revoked" in revoked.stderr
    document = _one_document(cli("token", "inspect", token, "--json"))
    assert document["revoked"] is True and document["valid"] is False

    expired = issue_token(TEST_SECRET, subject + "-late", ["reader"], ttl_seconds=-600)
    late = _one_document(cli("token", "inspect", expired, "--json"))
    assert late["expired"] is True and late["problems"][0].startswith("expired at ")
    assert cli("token", "inspect", expired).exit_code == 1

    stranger = issue_token(TEST_SECRET, subject + "-idp", ["reader", "superuser"])
    passes = cli("token", "inspect", stranger, "--json")
    assert passes.exit_code == 0 and "grant nothing): superuser" in passes.stderr
    assert _one_document(passes)["unknown_roles"] == ["superuser"]

    forged = issue_token("another-secret-" + "y" * 40, subject + "-forged", ["admin"])
    bad = cli("token", "inspect", forged, color=False)
    assert bad.exit_code == 1 and "invalid signature" in bad.stdout
    assert _one_document(cli("token", "inspect", forged, "--json"))["signature"] == "invalid"
    assert cli("token", "inspect", "not-a-token").exit_code == 1


def test_schedule_list_and_show_as_text_and_json(cli: Any) -> None:
    """`schedule show` is label/value lines, --json the API's document; `schedule list
    --type` filters, --json is an array."""
    name = f"cli-json-{uuid.uuid4().hex[:6]}"
    created = cli("schedule", "create", name, "--every", "5m", "--type", "event", "--data",
                  '{"kind": "cli"}', "--json")
    assert _one_document(created)["every"] == 300.0
    try:
        shown = cli("schedule", "show", name, color=False)
        assert shown.exit_code == 0, shown.output
        assert shown.stdout.splitlines()[0].split() == ["name", name]
        assert "every 300s" in shown.stdout and '"kind": "cli"' in shown.stdout
        document = _one_document(cli("schedule", "show", name, "--json"))
        assert document["name"] == name and document["type"] == "event"
        listed = _one_document(cli("schedule", "list", "--type", "event", "--json"))
        assert name in {item["name"] for item in listed}
        assert all(item["type"] == "event" for item in listed)
        others = _one_document(cli("schedule", "list", "--type", "metric", "--json"))
        assert name not in {item["name"] for item in others}
    finally:
        assert cli("schedule", "delete", name).exit_code == 0


def test_check_json_is_one_document(cli: Any) -> None:
    """`check --json` prints only its document on stdout, whatever it finds."""
    document = _one_document(cli("check", "--offline", "--only", "policy", "--json"))
    assert sorted(document) == ["checks", "errors", "ok", "warnings"]
