"""Consumers are found in code, in installed packages (entry points) and in module paths."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from integration.events.consumers import ENTRY_POINT_GROUP, consumer, load_subscriptions
from integration.loop.stages import Stages, loop_subscriptions
from integration.settings import ConfigurationError


def test_an_installed_package_adds_consumers_through_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A distribution declaring ``integration.consumers`` contributes its subscriptions."""
    info = tmp_path / "pager_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pager-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\npager = tests.support.consumers:CONSUMERS\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    names = [s.name for s in load_subscriptions("")]
    assert names == ["healthy", "fragile", "emitter", "ledger", "inline-ok", "inline-flaky"]
    assert "tests.support.consumers" in sys.modules


def test_a_name_declared_twice_is_an_error() -> None:
    """Two consumers under one name would share a queue: refused at start."""
    with pytest.raises(ValueError, match="already declared"):
        load_subscriptions("tests.support.consumers:CONSUMERS,tests.support.consumers")


def test_the_decorator_declares_topics_and_a_queue() -> None:
    """``@consumer`` gives a subscription matching its patterns, on ``consumer.<name>``."""

    @consumer("alert.*", "*.dead", name="pager")
    def page(event: dict[str, object], context: object) -> None:
        """Page someone."""

    assert page.type_name == "consumer.pager" and page.description == "Page someone."
    assert page.matches("alert.succeeded") and page.matches("action.dead")
    assert not page.matches("metric.succeeded")


#: Stages whose rules and evaluator are never asked for (only their names are).
STAGES_OF_NO_USE = Stages(lambda: pytest.fail("no rules"), lambda: pytest.fail("no state"))


def test_loop_stages_can_be_left_out_and_unknown_ones_are_refused() -> None:
    """``INTEGRATION_LOOP_STAGES`` selects built-in stages, so a user's consumer replaces one."""
    assert [s.name for s in loop_subscriptions("alerting,recording", STAGES_OF_NO_USE)] == \
        ["loop-alerting", "loop-recording"]
    assert loop_subscriptions("", STAGES_OF_NO_USE) == []
    with pytest.raises(ConfigurationError, match="unknown stage"):
        loop_subscriptions("alerting,healing", STAGES_OF_NO_USE)


def test_delivery_events_reach_only_subscribers_that_name_them() -> None:
    """A ``*`` subscriber does not receive the events of deliveries (which would feed it its
    own deliveries forever); ``webhook.dead`` named explicitly does; a consumer never gets the
    events of its own deliveries; webhooks never get webhook delivery events."""
    from integration.events.webhooks import Webhook

    everything = consumer("*", name="audit")(lambda e, c: None)
    failures = consumer("webhook.dead", "consumer.*.dead", name="watcher")(lambda e, c: None)
    assert everything.matches("alert.succeeded")
    assert not everything.matches("webhook.succeeded")
    assert not everything.matches("consumer.watcher.dead")
    assert failures.matches("webhook.dead") and failures.matches("consumer.audit.dead")
    assert not failures.matches("consumer.watcher.dead")
    hook = Webhook(id="w", url="https://example.com/h", topics=["*", "webhook.dead"],
                   secret="s" * 16, owner="o", created_at="2026-01-01T00:00:00+00:00")
    assert hook.matches("action.dead") and hook.matches("consumer.audit.dead") is False
    assert not hook.matches("webhook.dead")
