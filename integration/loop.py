"""The built-in stages of the self-healing loop, as consumers of result events.

metric -> (alerting) -> alert -> (diagnosing) -> diagnosis -> (planning) -> action ->
(recording) -> action.result. Each stage is an ordinary consumer: its deliveries have their own
queue, retries and dead letters, and the message it emits is caused by the event it consumed,
so one trace shows the whole chain. ``INTEGRATION_LOOP_STAGES`` chooses which built-in stages
run; leave one out and subscribe your own consumer to its topic to replace it.
"""

from __future__ import annotations

from typing import Any

from integration.consumers import ConsumerContext, Subscription

#: The stages in loop order, each with the topics it consumes.
STAGE_TOPICS = {
    "recording": ("action.succeeded", "action.dead"),
}


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


_STAGES = {
    "recording": record_action,
}


def loop_subscriptions(stages: str) -> list[Subscription]:
    """The enabled built-in stages (comma-separated names), as subscriptions ``loop-<stage>``."""
    wanted = [s.strip() for s in stages.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(STAGE_TOPICS))
    if unknown:
        from integration.settings import ConfigurationError

        raise ConfigurationError(
            f"INTEGRATION_LOOP_STAGES: unknown stage(s) {', '.join(unknown)}; "
            f"known: {', '.join(STAGE_TOPICS)}")
    return [Subscription(f"loop-{stage}", STAGE_TOPICS[stage], _STAGES[stage],
                         (_STAGES[stage].__doc__ or "").split("\n")[0])
            for stage in STAGE_TOPICS if stage in wanted]
