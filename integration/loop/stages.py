"""The built-in stages of the self-healing loop, as consumers of result events.

metric -(alerting)-> alert -(diagnosing)-> diagnosis -(planning)-> action -(recording)->
action.result. Each stage is an inline consumer: it runs in the worker that produced the event,
its delivery recorded with the outcome, and the message it emits is caused by the event it
consumed, so one trace shows the whole chain. The rules come from ``INTEGRATION_RULES_FILE``.
``INTEGRATION_LOOP_STAGES`` chooses which built-in stages run; leave one out and subscribe
your own consumer to its topic to replace it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

from integration.events.consumers import ConsumerContext, ConsumerHandler, Subscription
from integration.loop.rules import Rules
from integration.loop.thresholds import ThresholdEvaluator
from integration.loop.types import MetricPayload
from integration.settings import ConfigurationError

#: How long a delivery's alert edges are kept for its retries (longer than any retry schedule).
EDGES_TTL_SECONDS = 7 * 24 * 3600


def _result(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data") or {}
    result = data.get("result")
    return result if isinstance(result, dict) else {}


class Stages:
    """The stages' handlers, with the rules and the threshold evaluator they read (built
    lazily by the composition root: a gateway only needs the stages' names)."""

    def __init__(self, rules: Callable[[], Rules],
                 evaluator: Callable[[], ThresholdEvaluator]) -> None:
        self.rules = rules
        self.evaluator = evaluator

    def raise_alerts(self, event: dict[str, Any], context: ConsumerContext) -> dict[str, Any]:
        """A metric sample against the threshold rules (state shared in Redis): an ``alert``
        message when a series starts firing or resolves, nothing while it stays put."""
        sample = _result(event)
        metric = MetricPayload.model_validate({
            "name": sample["metric"], "value": sample["value"],
            "labels": sample.get("labels") or {}, "observed_at": sample.get("observed_at"),
            "thresholds": sample.get("thresholds")}, strict=False)
        evaluator = self.evaluator()
        # The series' state moves before the alerts are emitted. Should an emit fail, the
        # retried delivery would see no edge any more (the state has moved): so the edges
        # this delivery found are kept under its id, and a retry emits those.
        key = f"{evaluator.prefix}:loop:edges:{context.envelope.id}"
        stored = cast(bytes | None, evaluator.client.get(key))
        if stored is not None:
            edges = json.loads(stored)
        else:
            edges = [[t.fingerprint, t.status, t.payload()] for t in evaluator.observe(metric)]
            evaluator.client.set(key, json.dumps(edges), ex=EDGES_TTL_SECONDS)
        alerts = [context.emit("alert", payload, key=f"alert:{fingerprint}:{status}")
                  for fingerprint, status, payload in edges]
        return {"alerts": alerts}

    def diagnose(self, event: dict[str, Any], context: ConsumerContext) -> dict[str, Any]:
        """A firing alert through the diagnosis rules; a resolved alert closes its loop."""
        alert = _result(event)
        if alert.get("status") != "firing":
            return {"closed": alert.get("fingerprint")}
        diagnosis = self.rules().diagnose(alert)
        if diagnosis is None:
            return {"diagnosed": False}
        diagnosis["labels"] = alert.get("labels") or {}
        return {"diagnosis": context.emit("diagnosis", diagnosis)}

    def plan(self, event: dict[str, Any], context: ConsumerContext) -> dict[str, Any]:
        """An actionable diagnosis through its playbook: the ``action`` to execute."""
        diagnosis = _result(event)
        if not diagnosis.get("actionable"):
            return {"planned": False}
        action = self.rules().plan(diagnosis, diagnosis.get("labels") or {})
        if action is None:
            return {"planned": False}
        return {"action": context.emit("action", action)}

    @staticmethod
    def record_action(event: dict[str, Any], context: ConsumerContext) -> dict[str, Any]:
        """An executed (or failed) action becomes its ``action.result``, closing the loop."""
        data = event.get("data") or {}
        action_id = str(data.get("message_id") or event.get("subject") or "")
        succeeded = data.get("status") == "succeeded"
        output = data.get("result") if succeeded else {"error": data.get("error")}
        result_id = context.emit("action.result", {
            "action_id": action_id,
            "status": "succeeded" if succeeded else "failed",
            "output": output or {},
        })
        return {"action_id": action_id, "action_result": result_id}


#: The stages in loop order: the topics each consumes and its handler's name.
STAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "alerting": (("metric.succeeded",), "raise_alerts"),
    "diagnosing": (("alert.succeeded",), "diagnose"),
    "planning": (("diagnosis.succeeded",), "plan"),
    "recording": (("action.succeeded", "action.dead"), "record_action"),
}


def loop_subscriptions(stages: str, handlers: Stages) -> list[Subscription]:
    """The enabled built-in stages (comma-separated names), as subscriptions ``loop-<stage>``."""
    wanted = [s.strip() for s in stages.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(STAGES))
    if unknown:
        raise ConfigurationError(
            f"INTEGRATION_LOOP_STAGES: unknown stage(s) {', '.join(unknown)}; "
            f"known: {', '.join(STAGES)}")
    # Inline: each stage runs in the worker that finished the message it consumes, a
    # fraction of a message rather than a delivery message of its own (docs/decisions/0002).
    subscriptions = []
    for stage, (topics, name) in STAGES.items():
        if stage in wanted:
            handler: ConsumerHandler = getattr(handlers, name)
            subscriptions.append(Subscription(f"loop-{stage}", topics, handler,
                                              (handler.__doc__ or "").split("\n")[0],
                                              inline=True))
    return subscriptions
