"""The worker's consumer: Celery's steps but native delayed delivery."""

from __future__ import annotations

from celery.worker.consumer import Consumer as CeleryConsumer

from tasks.consumer import Consumer


def test_the_consumer_runs_celerys_steps_without_native_delayed_delivery() -> None:
    """The service publishes no countdowns; the step would connect to every node of the URL."""
    ours, celerys = Consumer.Blueprint.default_steps, CeleryConsumer.Blueprint.default_steps
    assert "celery.worker.consumer.delayed_delivery:DelayedDelivery" in celerys
    assert ours == [step for step in celerys if not step.endswith(":DelayedDelivery")]
