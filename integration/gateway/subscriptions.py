"""``/api/v1/subscriptions``: outbound webhook subscriptions (create, list, show, enable,
delete). Nested in the API blueprint; every route needs ``manage:subscriptions``, and a
subscription may name only topics its creator may subscribe to."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, url_for
from pydantic import ValidationError
from spectree import Response as Responses
from spectree import SpecTree

from integration.events.signatures import LEGACY_SIGNATURE_HEADER, standard_secret
from integration.events.webhooks import Webhook, WebhookRequest
from integration.gateway import schemas
from integration.gateway.auth import current_principal
from integration.gateway.bodies import json_body
from integration.gateway.resources import managed
from integration.gateway.runtime import runtime
from integration.messages.problems import Forbidden, NotFound, invalid, validation_errors


def create_subscriptions_api(spec: SpecTree) -> Blueprint:
    subscriptions = managed(Blueprint("subscriptions", __name__, url_prefix="/subscriptions"),
                            "subscriptions", "subscription store")

    @subscriptions.post("")
    @spec.validate(json=schemas.WebhookCreate, skip_validation=True, tags=["subscriptions"],
                   resp=Responses(HTTP_201=schemas.WebhookCreated,
                                  HTTP_403=schemas.ProblemDocument,
                                  HTTP_422=schemas.ProblemDocument))
    def create_subscription() -> tuple[Response, int, dict[str, str]]:
        """Subscribe a URL to topic patterns; the answer shows the signing secret, once (also
        in the ``whsec_`` form of Standard Webhooks)."""
        try:
            request = WebhookRequest.model_validate(json_body())
        except ValidationError as exc:
            raise invalid(validation_errors(exc), "Invalid subscription.") from None
        principal = current_principal()
        refused = [t for t in request.topics
                   if not principal.grants.may_subscribe_pattern(t)]
        if refused:
            raise Forbidden(f"subscribe:{refused[0]}")
        rt = runtime()
        problem = rt.egress_refusal(request.url)
        if problem:
            raise invalid([{"loc": ["url"], "type": "url_refused", "msg": problem}],
                          "The webhook URL is not allowed.")
        if principal.grants.read == "none":
            raise Forbidden("read:messages")
        webhook = rt.webhooks.create(request, owner=principal.subject,
                                     scope=principal.grants.read, roles=list(principal.roles))
        location = url_for("api.subscriptions.get_subscription", webhook_id=webhook.id)
        return (jsonify(**webhook.public(), secret=webhook.secret,
                        signing_secret=standard_secret(webhook.secret),
                        signature_scheme="standard-webhooks",
                        signature_header=LEGACY_SIGNATURE_HEADER), 201, {"Location": location})

    @subscriptions.get("")
    @spec.validate(skip_validation=True, tags=["subscriptions"],
                   resp=Responses(HTTP_200=schemas.WebhookList))
    def list_subscriptions() -> Response:
        """The subscriptions the caller may manage, with whether each is enabled and why not."""
        principal = current_principal()
        return jsonify(items=[w.public() for w in runtime().webhooks.all()
                              if principal.may_manage_item("subscriptions", w.owner)])

    @subscriptions.get("/<webhook_id>")
    @spec.validate(skip_validation=True, tags=["subscriptions"],
                   resp=Responses(HTTP_200=schemas.Webhook, HTTP_404=schemas.ProblemDocument))
    def get_subscription(webhook_id: str) -> Response:
        """One subscription (never its secret)."""
        return jsonify(_mine(webhook_id).public())

    @subscriptions.post("/<webhook_id>/enable")
    @spec.validate(skip_validation=True, tags=["subscriptions"],
                   resp=Responses(HTTP_200=schemas.Webhook, HTTP_404=schemas.ProblemDocument))
    def enable_subscription(webhook_id: str) -> Response:
        """Turn a subscription that was disabled after failing back on."""
        webhook = runtime().webhooks.enable(_mine(webhook_id).id)
        if webhook is None:
            raise NotFound(NOT_FOUND)
        return jsonify(webhook.public())

    @subscriptions.delete("/<webhook_id>")
    @spec.validate(skip_validation=True, tags=["subscriptions"],
                   resp=Responses(HTTP_204=None, HTTP_404=schemas.ProblemDocument))
    def delete_subscription(webhook_id: str) -> tuple[str, int]:
        """Stop deliveries to this subscription (those already queued are skipped)."""
        if not runtime().webhooks.delete(_mine(webhook_id).id):
            raise NotFound(NOT_FOUND)
        return "", 204

    return subscriptions


NOT_FOUND = "No subscription with this id."


def _mine(webhook_id: str) -> Webhook:
    """The subscription, if the caller may manage it; another owner's looks exactly like a
    missing one."""
    webhook = runtime().webhooks.get(webhook_id)
    if webhook is None or not current_principal().may_manage_item("subscriptions",
                                                                  webhook.owner):
        raise NotFound(NOT_FOUND)
    return webhook
