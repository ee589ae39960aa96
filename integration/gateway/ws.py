"""``GET /api/v1/ws``: a WebSocket to subscribe to result events and submit messages.

Frames are JSON text; each is documented in the README's WebSocket section. Submissions take
the REST path (same parser, policy check, store and publisher) with channel ``websocket``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, g, request
from flask_jwt_extended import get_jwt, verify_jwt_in_request

from integration import logs, tracing
from integration.broker.submission import Accepted, Result
from integration.gateway.auth import (
    REVOKED,
    Principal,
    TokenChecks,
    current_principal,
    principal_of,
    verified_claims,
    verify_token,
)
from integration.gateway.fanout import Client, WebSocketHub, error_frame, frame
from integration.gateway.limits import charge
from integration.gateway.metrics import gateway_metrics
from integration.gateway.reads import status_url
from integration.gateway.requestlog import trace_context
from integration.gateway.runtime import Runtime, runtime
from integration.gateway.websocket import (
    POLICY_VIOLATION,
    UNSUPPORTED_DATA,
    Binary,
    WebSocket,
    handshake_error,
)
from integration.messages import tracecontext
from integration.messages.envelope import new_id
from integration.messages.problems import (
    UNEXPECTED,
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    Problem,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    invalid,
)
from integration.messages.tracecontext import TraceContext
from integration.security.verification import TokenClaims

EXTENSION_KEY = "integration_ws"
#: Query parameters that would put a token in URLs (and so in proxy and server logs).
TOKEN_PARAMETERS = ("token", "jwt", "access_token", "auth", "authorization")
#: Per socket: enough for a dashboard, not a way to make every event match many times.
MAX_PATTERNS = 64
MAX_PATTERN_LENGTH = 200

log = logs.get_logger("integration.gateway.ws")


class UpgradeRequired(Problem):
    """The request is not a WebSocket upgrade."""

    status = 426
    slug = "upgrade-required"
    title = "Upgrade required"

    @property
    def headers(self) -> dict[str, str]:
        return {"Upgrade": "websocket", "Connection": "Upgrade"}


class _Upgraded(Response):
    """The socket now belongs to the WebSocket: gunicorn must write nothing more on it
    (its async workers close the connection on StopIteration)."""

    def __call__(self, environ: Any, start_response: Any) -> Any:
        raise StopIteration


def hub() -> WebSocketHub:
    found: WebSocketHub | None = current_app.extensions.get(EXTENSION_KEY)
    if found is None:
        rt = runtime()
        found = current_app.extensions[EXTENSION_KEY] = WebSocketHub(rt.settings, rt.store)
    return found


def going_away(app: Any) -> None:
    """Close this process's sockets with 1001: the server is stopping (SIGTERM)."""
    found = getattr(app, "extensions", {}).get(EXTENSION_KEY)
    if found is not None:
        found.close_all()


def websocket() -> Response:
    """Upgrade to a WebSocket (authenticated by header here, or by the first frame)."""
    rt = runtime()
    if any(name in request.args for name in TOKEN_PARAMETERS):
        raise Unauthorized("Tokens in the URL are refused (URLs end up in logs): send an "
                           "Authorization header or an auth frame.")
    reason = handshake_error(request.environ)
    if reason:
        raise UpgradeRequired(reason)
    sock = request.environ.get("gunicorn.socket")
    if sock is None or rt.settings.gateway_worker_class != "gevent":
        raise Unavailable("WebSockets need the gateway's gevent server (integration serve).",
                          retry_after=rt.settings.retry_after_seconds)
    principal = None
    if request.headers.get("Authorization"):
        verify_jwt_in_request()  # a bad token is a 401 problem, before any upgrade
        principal = current_principal()
        principal.require_some_grant()  # as on every REST route: 403, before any upgrade
    sockets = hub()
    if not sockets.reserve():
        raise Unavailable("This gateway process has no room for another WebSocket.",
                          retry_after=rt.settings.retry_after_seconds)
    limit = rt.settings.max_body_bytes
    try:
        conn = WebSocket.accept(request.environ, sock, max_buffer=rt.settings.ws_max_buffer,
                                max_message_bytes=limit, too_big=error_frame(PayloadTooLarge(
                                    f"A frame holds at most {limit} bytes.")))
    except BaseException:
        sockets.release()
        raise
    client = Client(conn)
    sockets.add(client)
    metrics = gateway_metrics()
    metrics.sockets.inc()
    session = Session(rt, sockets, client)
    session.trace = trace_context()
    try:
        if principal is None:
            client.auth_deadline = time.monotonic() + rt.settings.ws_auth_timeout_seconds
        else:
            session.authenticated(principal, verified_claims(
                get_jwt(), rt.verification.roles_claim))
        session.run()
    finally:
        sockets.remove(client)
        conn.finish(linger=rt.settings.ws_send_timeout_seconds)
        metrics.socket_closed(conn.close_code)
        log.info("websocket closed", subject=client.subject, code=conn.close_code,
                 reason=conn.close_reason,
                 duration_s=round(time.monotonic() - client.opened, 3))
    return _Upgraded(status=101)


class Session:
    """One socket's conversation: auth, then subscribe, unsubscribe, submit and ping frames."""

    def __init__(self, rt: Runtime, sockets: WebSocketHub, client: Client) -> None:
        self.rt = rt
        self.hub = sockets
        self.client = client
        self.ws = client.ws
        self.principal: Principal | None = None
        #: The upgrade request's W3C trace context: the parent of each submit frame's span
        #: whose frame does not carry its own.
        self.trace: TraceContext | None = None

    def run(self) -> None:
        while True:
            message = self.ws.receive()
            if message is None:
                return
            if not self.ws.open:
                continue  # closing: only the client's close frame matters now
            if isinstance(message, Binary):
                self.ws.close(UNSUPPORTED_DATA, "JSON text frames only",
                              last=error_frame(BadRequest("Frames are JSON text, not binary.")))
                continue
            try:
                body = json.loads(message)
            except ValueError:
                self.reply(error_frame(BadRequest("The frame is not JSON.")))
                continue
            kind = body.get("type") if isinstance(body, dict) else None
            ref = body.get("id") if isinstance(body, dict) else None
            gateway_metrics().frame(kind)
            if self.principal is None:
                self.authenticate(body if kind == "auth" else None)
                continue
            handler = self.HANDLERS.get(kind) if isinstance(kind, str) else None
            if handler is None:
                self.reply(error_frame(invalid(
                    [{"loc": ["type"], "type": "unknown_frame",
                      "msg": f"one of {', '.join(sorted(self.HANDLERS))}"}],
                    "Unknown frame type."), ref))
                continue
            try:
                handler(self, body, ref)
            except Problem as problem:
                self.reply(error_frame(problem, ref))
            except Exception:  # noqa: BLE001 - one frame's failure never ends the session
                log.exception("websocket frame failed", frame=kind)
                self.reply(error_frame(Problem(UNEXPECTED), ref))

    def reply(self, text: str) -> None:
        """Answer the client; a client whose buffer is full of unread frames is dropped."""
        if not self.ws.send(text) and self.ws.open:
            self.hub.drop_slow(self.client)

    # -- authentication ----------------------------------------------------------------------
    def authenticate(self, body: dict[str, Any] | None) -> None:
        token = body.get("token") if body else None
        if not isinstance(token, str) or not token:
            self.refuse(Unauthorized('The first frame must be {"type": "auth", "token": ...} '
                                     "(or send an Authorization header on the upgrade)."))
            return
        try:
            # The checks of a REST request, by the same checks, in the same order.
            claims = verify_token(token, TokenChecks(self.rt.verification,
                                                     self.rt.revocations))
            principal = principal_of(claims, self.rt.policy)
            principal.require_some_grant()
        except Exception as exc:  # noqa: BLE001 - answered as a REST request would be (401, 403)
            self.refuse(_problem_of(exc))
            return
        self.authenticated(principal, claims)

    def authenticated(self, principal: Principal, claims: TokenClaims) -> None:
        self.principal = principal
        g.principal = principal  # the request's log line names the subject
        self.client.subject = principal.subject
        self.client.read = principal.grants.read
        self.client.auth_deadline = None
        self.client.claims = claims
        # Closed when a REST request with the token would be refused as expired.
        left = claims.seconds_left(self.rt.verification.leeway)
        self.client.expires_at = time.monotonic() + max(0.0, left)
        self.reply(frame("authenticated", subject=principal.subject,
                         roles=list(principal.roles)))

    def refuse(self, problem: Problem | dict[str, Any]) -> None:
        self.client.auth_deadline = None
        status = problem.status if isinstance(problem, Problem) else problem.get("status")
        self.ws.close(POLICY_VIOLATION, "forbidden" if status == 403 else "unauthorized",
                      last=error_frame(problem))

    # -- frames --------------------------------------------------------------------------------
    def subscribe(self, body: dict[str, Any], ref: Any) -> None:
        assert self.principal is not None
        patterns = _patterns(body)
        if self.principal.grants.read == "none":
            raise Forbidden("read:messages", "Your roles may read no message, so no event.")
        for pattern in patterns:
            if not self.principal.grants.may_subscribe_pattern(pattern):
                raise Forbidden(f"subscribe:{pattern}")
        if len(self.client.patterns | set(patterns)) > MAX_PATTERNS:
            raise invalid([{"loc": ["topics"], "type": "too_long",
                            "msg": f"at most {MAX_PATTERNS} patterns per connection"}],
                          "Too many topic patterns.")
        try:
            self.hub.subscribe(self.client, patterns)
        except redis.RedisError:
            raise Unavailable("The event stream is unavailable; subscribe again shortly.",
                              retry_after=self.rt.settings.retry_after_seconds) from None
        self.reply(frame("subscribed", **_ref(ref), topics=sorted(self.client.patterns)))

    def unsubscribe(self, body: dict[str, Any], ref: Any) -> None:
        patterns = None if body.get("topics") is None else _patterns(body)
        self.hub.unsubscribe(self.client, patterns)
        self.reply(frame("unsubscribed", **_ref(ref), topics=sorted(self.client.patterns)))

    def ping(self, body: dict[str, Any], ref: Any) -> None:
        self.reply(frame("pong", **_ref(ref)))

    def submit(self, body: dict[str, Any], ref: Any) -> None:
        """One message or a list: an ``ack`` or ``error`` frame per message, in order; the
        frame's ``traceparent``/``tracestate`` (else the upgrade request's) is the trace the
        messages continue (an invalid one is ignored)."""
        parent = tracecontext.of(body) or self.trace
        with tracing.span("submit", "server", parent, {"integration.channel": "websocket"}):
            self._submit(body, ref)

    def _submit(self, body: dict[str, Any], ref: Any) -> None:
        assert self.principal is not None
        principal, rt, metrics = self.principal, self.rt, gateway_metrics()
        claims = self.client.claims
        if claims is not None and rt.revocations.token_revoked(claims):
            self.refuse(Unauthorized(REVOKED))
            return
        raw = body.get("message")
        wait = charge(principal.subject, principal.grants.rate_limit)
        if wait is not None:
            problem = TooManyRequests(f"Rate limit of {principal.grants.rate_limit} exceeded; "
                                      f"retry in {wait} s.", retry_after=wait)
            metrics.count(None, problem, channel="websocket")
            raise problem
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            raise invalid([{"loc": ["message"], "msg": "the batch is empty", "type": "too_short"}],
                          "An empty batch has nothing to submit.")
        if len(items) > rt.settings.batch_limit:
            raise PayloadTooLarge(f"A batch holds at most {rt.settings.batch_limit} messages.")
        results = rt.submitter.submit_raw(items, owner=principal.subject, channel="websocket",
                                          correlation_id=new_id(), sender=principal.sender)
        for index, (item, result) in enumerate(zip(items, results, strict=True)):
            metrics.count(item, result, channel="websocket")
            at = {"index": index} if isinstance(raw, list) else {}
            self.reply(_result_frame(result, ref, at))

    HANDLERS = {"subscribe": subscribe, "unsubscribe": unsubscribe, "submit": submit,
                "ping": ping}


def _ref(ref: Any) -> dict[str, Any]:
    return {"ref": ref} if ref is not None else {}


def _result_frame(result: Result, ref: Any, at: dict[str, Any]) -> str:
    if isinstance(result, Accepted):
        return frame("ack", **_ref(ref), **at, id=result.id, status="queued",
                     status_url=status_url(result.id))
    return error_frame(result, ref, **at)


def _patterns(body: dict[str, Any]) -> list[str]:
    topics = body.get("topics")
    if (not isinstance(topics, list) or not topics
            or not all(isinstance(t, str) and 0 < len(t) <= MAX_PATTERN_LENGTH for t in topics)):
        raise invalid([{"loc": ["topics"], "type": "list_type",
                        "msg": "a non-empty list of topic patterns such as \"alert.*\""}],
                      "Invalid topics.")
    return list(dict.fromkeys(topics))


def _problem_of(exc: Exception) -> Problem | dict[str, Any]:
    """The problem a REST call with this token would have been refused with (the same
    flask-jwt-extended loaders render it), as a document."""
    if isinstance(exc, Problem):
        return exc
    response = current_app.handle_user_exception(exc)
    document = response.get_json(silent=True) if isinstance(response, Response) else None
    if isinstance(document, dict):
        return document
    return Unauthorized("The bearer token is invalid.")


def init_websocket(app: Flask) -> Blueprint:
    ws = Blueprint("ws", __name__, url_prefix="/api/v1")
    # Werkzeug routes upgrade requests only to WebSocket rules; the plain rule answers 426.
    ws.add_url_rule("/ws", "websocket", websocket, methods=["GET"], websocket=True)
    ws.add_url_rule("/ws", "websocket", websocket, methods=["GET"])
    app.register_blueprint(ws)
    return ws
