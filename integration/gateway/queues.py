"""``GET /api/v1/queues``: how many messages wait in each queue, and the live workers with
the queues they consume (from their heartbeats), for operators."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify
from spectree import Response as Responses
from spectree import SpecTree

from integration.gateway import schemas
from integration.gateway.auth import current_principal
from integration.gateway.runtime import runtime
from integration.messages.problems import Forbidden, Unavailable
from integration.messages.routing import queue_names
from integration.worker.heartbeats import Heartbeats


def register(api: Blueprint, spec: SpecTree) -> None:
    """Add the queue listing to the API blueprint, documented on ``spec``."""

    @api.get("/queues")
    @spec.validate(skip_validation=True, tags=["resilience"],
                   resp=Responses(HTTP_200=schemas.QueueList, HTTP_403=schemas.ProblemDocument,
                                  HTTP_503=schemas.ProblemDocument))
    def list_queues() -> Response:
        """Each queue's depth and live consumers, and every live worker (read scope ``any``)."""
        if current_principal().grants.read != "any":
            raise Forbidden("read:any")
        rt = runtime()
        try:
            beats = Heartbeats(rt.store.client, rt.settings.key_prefix).live()
            consumed = sorted({str(q) for beat in beats.values() for q in beat.get("queues") or ()})
            names = list(dict.fromkeys([*queue_names(rt.registry), *consumed]))
            depths = rt.publisher.queue_depths(names)
        except Exception:  # noqa: BLE001 - Redis or AMQP errors alike: the operator retries
            raise Unavailable("The broker or the status store is unreachable.",
                              retry_after=rt.settings.retry_after_seconds) from None
        consumers = {name: sum(name in (beat.get("queues") or ()) for beat in beats.values())
                     for name in names}
        workers = [{"name": name, "queues": sorted(str(q) for q in beat.get("queues") or ()),
                    "held": len(beat["held"]),
                    "until": datetime.fromtimestamp(float(beat["until"]) / 1000, UTC).isoformat()}
                   for name, beat in sorted(beats.items())]
        return jsonify(queues=[{"name": name, "depth": int(depths.get(name, 0)),
                                "consumers": consumers[name]} for name in names],
                       workers=workers)
