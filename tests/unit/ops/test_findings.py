"""What `integration check` shows of a URL."""

from __future__ import annotations

from integration.ops.checks.findings import shown


def test_a_broker_url_naming_several_nodes_shows_no_password_of_any() -> None:
    url = ("amqp://integration:first-secret@a:5672/v;amqp://integration:second-secret@b:5672/v;"
           "amqp://integration:third-secret@c:5672/v")
    text = shown(url)
    assert "secret" not in text
    assert text.count("integration:**@") == 3 and "@b:5672/v" in text and "@c:5672/v" in text
