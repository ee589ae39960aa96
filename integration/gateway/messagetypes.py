"""``GET /api/v1/types``: the registered message types, as the gateway and workers read them."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from spectree import Response as Responses
from spectree import SpecTree

from integration.gateway import schemas
from integration.gateway.runtime import runtime
from integration.messages.routing import PROCESS_TASK


def register(api: Blueprint, spec: SpecTree) -> None:
    """Add the type listing to the API blueprint, documented on ``spec``."""

    @api.get("/types")
    @spec.validate(resp=Responses(HTTP_200=schemas.TypeList), skip_validation=True,
                   tags=["types"])
    def list_types() -> Response:
        """Registered message types, their queues and payload JSON Schemas."""
        return jsonify(task=PROCESS_TASK, types=[t.describe() for t in runtime().registry])
