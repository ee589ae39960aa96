"""The lines of configuration mistakes: the cause and the fix, never a password."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from integration.mistakes import address, explain, hide_password, one_line
from integration.settings import ConfigurationError, Settings


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
    ("redis://user:secret@host/0", "redis://user:***@host/0"),
    ("redis://secret@host/0", "redis://***@host/0"),
    ("user:secret@host:6379", "user:***@host:6379"),
    ("redis://host:6379/0", "redis://host:6379/0"),
])
def test_a_shown_url_never_has_its_password(url: str, shown: str) -> None:
    """The password of a URL, with or without a scheme, is replaced by ***."""
    assert hide_password(url) == shown


def test_one_line_joins_lines_and_hides_passwords_in_a_message() -> None:
    """A library's message becomes one line without the password of a URL in it."""
    text = "cannot connect to amqp://guest:secret@rabbit:5672//:\n  refused"
    assert one_line(text) == "cannot connect to amqp://guest:***@rabbit:5672//: refused"


@pytest.mark.parametrize(("variable", "value", "line"), [
    ("redis_url", "localhost:16380",
     "INTEGRATION_REDIS_URL 'localhost:16380' has no scheme: write redis://localhost:16380/0"),
    ("redis_url", ":secret@localhost:16380/2",
     "INTEGRATION_REDIS_URL ':***@localhost:16380/2' has no scheme: write "
     "redis://:***@localhost:16380/2"),
    ("redis_url", "http://localhost:6379",
     "INTEGRATION_REDIS_URL has the scheme 'http', not one of redis://, rediss://, unix://: "
     "write redis://localhost:6379"),
    ("broker_url", "rabbit:5672", "INTEGRATION_BROKER_URL 'rabbit:5672' has no scheme"),
])
def test_a_url_without_a_known_scheme_is_refused_with_what_to_write(
        variable: str, value: str, line: str) -> None:
    """Redis URLs need redis://, rediss:// or unix://, a broker URL a kombu transport's."""
    with pytest.raises(ValidationError) as refused:
        Settings.model_validate({variable: value})
    explained = explain(refused.value)
    assert explained is not None and explained.startswith(line)
    assert "secret" not in explained


@pytest.mark.parametrize("url", ["redis://h:1/0", "rediss://h/0", "unix:///tmp/r.sock"])
def test_redis_schemes_are_accepted(url: str) -> None:
    assert Settings(redis_url=url, broker_url="amqp://guest@rabbit//").redis_url == url


def test_an_invalid_setting_names_the_variable_not_a_secret() -> None:
    """pydantic's own errors read `invalid setting VARIABLE: …`; a secret's value is not shown."""
    with pytest.raises(ValidationError) as refused:
        Settings.model_validate({"port": "not-a-port"})
    assert (explain(refused.value) or "").startswith("invalid setting INTEGRATION_PORT: ")


def test_what_is_not_a_mistake_keeps_its_traceback() -> None:
    """A bug (any other exception) is not explained away."""
    assert explain(KeyError("x")) is None
    assert explain(ConfigurationError("INTEGRATION_X is\nwrong")) == "INTEGRATION_X is wrong"


def test_the_address_of_a_url() -> None:
    assert address("redis://:pw@redis:6380/0") == "redis:6380"
    assert address("redis://localhost") == "localhost:6379"
    assert address("amqp://guest:pw@rabbit//") == "rabbit:5672"


def test_why_a_file_does_not_load_is_one_line() -> None:
    """The OS's reason, or the YAML error with its line and column."""
    import yaml

    from integration.mistakes import file_problem

    assert file_problem(PermissionError(13, "Permission denied")) == "Permission denied"
    with pytest.raises(yaml.YAMLError) as invalid:
        yaml.safe_load("thresholds: [\n")
    assert file_problem(invalid.value).startswith("not valid YAML: ")
    assert file_problem(invalid.value).endswith("(line 2, column 1)")
