"""The WebSocket hub of one gateway process: one reader of the events stream for all subscribers,
and one housekeeper for every socket's deadlines (auth, heartbeat, stuck writes)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, cast

import redis

from integration import logs
from integration.gateway.websocket import (
    GOING_AWAY,
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    WebSocket,
)
from integration.messages.problems import Problem, RetryLater, Unauthorized
from integration.security.revocations import Revocations
from integration.security.verification import TokenClaims
from integration.settings import Settings
from integration.store.records import StatusStore
from integration.store.redis_client import redis_client

log = logs.get_logger("integration.gateway.ws")

#: How often the housekeeper looks at every socket's deadlines.
_TICK_SECONDS = 0.25
#: How often open sockets' tokens are checked against the revocation list.
REVOCATION_CHECK_SECONDS = 2.0
#: Stream entries taken per read at most; never more than one send buffer holds, so a burst
#: read at once cannot by itself overflow a client that keeps up.
_READ_COUNT = 500


def frame(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


def error_frame(problem: Problem | dict[str, Any], ref: Any = None, **fields: Any) -> str:
    document = problem.to_dict() if isinstance(problem, Problem) else problem
    extra = {"ref": ref} if ref is not None else {}
    if isinstance(problem, RetryLater):  # what REST says in the Retry-After header
        extra["retry_after"] = problem.retry_after
    return frame("error", **extra, **fields, problem=document)


class SlowConsumer(Problem):
    """The client reads events more slowly than they arrive; its send buffer is full."""

    status = 503
    slug = "slow-consumer"
    title = "Slow consumer"


@dataclass(eq=False)
class Client:
    """One open socket and what it may receive."""

    ws: WebSocket
    subject: str | None = None
    read: str = "none"
    patterns: set[str] = field(default_factory=set)
    #: Monotonic deadlines: the auth frame, then the token's expiry.
    auth_deadline: float | None = None
    expires_at: float | None = None
    #: The token's claims: its id and subject are checked against the revocations while
    #: the socket is open.
    claims: TokenClaims | None = None
    opened: float = field(default_factory=time.monotonic)

    def wants(self, topic: str) -> bool:
        return self.read != "none" and any(fnmatchcase(topic, p) for p in self.patterns)


class WebSocketHub:
    """Sockets of this process; started lazily, so a process without sockets reads nothing."""

    def __init__(self, settings: Settings, store: StatusStore) -> None:
        self.settings = settings
        self.store = store
        self.revocations = Revocations(store.client, settings.key_prefix,
                                       settings.service_token_max_ttl_seconds)
        self._lock = threading.Lock()
        self._clients: set[Client] = set()
        self._reserved = 0  # places taken by upgrades not yet added
        self._subscribers: set[Client] = set()
        self._reading = False
        self._housekeeping = False
        self._shutting_down = False

    # -- membership ------------------------------------------------------------------------
    def reserve(self) -> bool:
        """Take a place for a socket about to be accepted; False when the process is full or
        shutting down. Checked and taken under the lock, so a burst of upgrades cannot pass
        ``WS_MAX_CONNECTIONS`` while earlier ones are still answering their handshake."""
        with self._lock:
            if self._shutting_down or (len(self._clients) + self._reserved
                                       >= self.settings.ws_max_connections):
                return False
            self._reserved += 1
            return True

    def release(self) -> None:
        """Give back a reserved place whose socket was never added."""
        with self._lock:
            self._reserved -= 1

    def add(self, client: Client) -> None:
        """Add a socket in the place ``reserve`` took for it."""
        with self._lock:
            self._reserved -= 1
            self._clients.add(client)
            if not self._housekeeping:
                self._housekeeping = True
                self._spawn(self._housekeep, "websocket-housekeeper")

    def remove(self, client: Client) -> None:
        with self._lock:
            self._clients.discard(client)
            self._subscribers.discard(client)

    def subscribe(self, client: Client, patterns: list[str]) -> None:
        """Add patterns; every event appended after this returns reaches the client."""
        with self._lock:
            client.patterns.update(patterns)
            self._subscribers.add(client)
            if not self._reading:
                # The position is taken here, not by the reader when it gets to run, so an
                # event appended right after the "subscribed" frame cannot be skipped.
                start = self._latest_id()
                self._reading = True
                self._spawn(lambda: self._read_events(start), "websocket-events")

    def unsubscribe(self, client: Client, patterns: list[str] | None) -> None:
        with self._lock:
            if patterns is None:
                client.patterns.clear()
            else:
                client.patterns.difference_update(patterns)
            if not client.patterns:
                self._subscribers.discard(client)

    def close_all(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> None:
        with self._lock:
            self._shutting_down = True
            clients = list(self._clients)
        for client in clients:
            client.ws.close(code, reason)

    @staticmethod
    def _spawn(target: Callable[[], None], name: str) -> None:
        # Daemon: a gevent worker exits without waiting for these loops.
        threading.Thread(target=target, name=name, daemon=True).start()

    # -- the events stream -----------------------------------------------------------------
    def _latest_id(self) -> str:
        newest = cast(list[Any], self.store.client.xrevrange(self.store.events_key, count=1))
        return newest[0][0].decode() if newest else "0-0"

    def _read_events(self, last_id: str) -> None:
        """One XREAD BLOCK loop for all subscribers; stops when the last one leaves."""
        settings = self.settings
        block_ms = settings.ws_read_block_ms
        client = redis_client(settings, health_check_interval=0,
                              socket_timeout=block_ms / 1000 + settings.publish_timeout_seconds)
        try:
            while True:
                with self._lock:
                    if not self._subscribers:
                        self._reading = False
                        return
                try:
                    reply: Any = client.xread({self.store.events_key: last_id},
                                              count=min(_READ_COUNT, settings.ws_max_buffer),
                                              block=block_ms)
                except redis.RedisError as exc:
                    log.warning("websocket events read failed; retrying", error=str(exc))
                    time.sleep(1.0)
                    continue
                for _stream, entries in reply or []:
                    last_id = entries[-1][0].decode()
                    self._dispatch(entries)
        except Exception:  # noqa: BLE001 - a bug here must not leave subscribers waiting forever
            log.exception("websocket events reader stopped")
            with self._lock:
                self._reading = False
                clients = list(self._subscribers)
            for subscriber in clients:
                subscriber.ws.close(1011, "event reader failed")
        finally:
            client.close()

    def _dispatch(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        with self._lock:
            subscribers = [c for c in self._subscribers if c.ws.open]
        if not subscribers:
            return
        decoded = [(fields[b"topic"].decode(), fields[b"message_id"].decode(), fields[b"event"])
                   for _id, fields in entries]
        owners: dict[str, str | None] = {}
        if any(c.read == "own" for c in subscribers):
            wanted = [mid for topic, mid, _ in decoded
                      if any(c.read == "own" and c.wants(topic) for c in subscribers)]
            if wanted:
                try:
                    owners = self.store.owners(wanted)
                except redis.RedisError:
                    log.warning("websocket owners unavailable; own-scope events skipped")
        for topic, message_id, event in decoded:
            text: str | None = None
            for subscriber in subscribers:
                if not subscriber.wants(topic):
                    continue
                if subscriber.read == "own" and owners.get(message_id) != subscriber.subject:
                    continue
                if text is None:  # the stored event is JSON already: embed it, do not re-encode
                    text = (f'{{"type":"event","topic":{json.dumps(topic)},'
                            f'"message_id":{json.dumps(message_id)},'
                            f'"event":{event.decode()}}}')
                if not subscriber.ws.send(text) and subscriber.ws.open:
                    self.drop_slow(subscriber)
            # Let the writers run (a greenlet switch under gevent): a buffer measures how far
            # a client lags, not how fast this loop can fill it.
            time.sleep(0)

    def drop_slow(self, client: Client) -> None:
        limit = self.settings.ws_max_buffer
        log.info("websocket slow consumer dropped", subject=client.subject, buffer=limit)
        problem = SlowConsumer(f"More than {limit} frames were waiting for this connection; "
                               "reconnect and read faster, or subscribe to fewer topics.")
        client.ws.close(TRY_AGAIN_LATER, "slow consumer: send buffer full",
                        last=error_frame(problem), drop_pending=True)
        self.unsubscribe(client, None)

    # -- deadlines ---------------------------------------------------------------------------
    def _housekeep(self) -> None:
        settings = self.settings
        revocations_checked = time.monotonic()
        while True:
            time.sleep(_TICK_SECONDS)
            with self._lock:
                clients = list(self._clients)
            now = time.monotonic()
            if now - revocations_checked >= REVOCATION_CHECK_SECONDS:
                revocations_checked = now
                self._close_revoked(clients)
            for client in clients:
                try:
                    self._check(client, now, settings)
                except Exception:  # noqa: BLE001 - one broken socket must not stop the others
                    log.exception("websocket housekeeping failed for one socket")
                    client.ws.abort()

    def _close_revoked(self, clients: list[Client]) -> None:
        """A token revoked while its socket is open, by its id or by its subject, stops
        working there too (one round trip for all of this process's sockets)."""
        holders = [c for c in clients if c.claims is not None and c.ws.open]
        if not holders:
            return
        try:
            revoked = self.revocations.tokens_revoked(
                [cast(TokenClaims, c.claims) for c in holders])
        except redis.RedisError as exc:
            log.warning("websocket revocation check failed", error=str(exc))
            return
        for client, gone in zip(holders, revoked, strict=True):
            if gone:
                client.ws.close(POLICY_VIOLATION, "token revoked", last=error_frame(
                    Unauthorized("The bearer token has been revoked.")))

    @staticmethod
    def _check(client: Client, now: float, settings: Settings) -> None:
        ws = client.ws
        stuck = ws.writing_since is not None and now - ws.writing_since > \
            settings.ws_send_timeout_seconds
        unanswered = ws.closing_since is not None and now - ws.closing_since > \
            (ws.close_grace if ws.close_grace is not None else settings.ws_send_timeout_seconds)
        if stuck or unanswered:
            ws.abort()  # it does not read: no close frame can reach it
        elif not ws.open:
            return
        elif client.auth_deadline is not None and now > client.auth_deadline:
            client.auth_deadline = None
            ws.close(POLICY_VIOLATION, "authentication timeout", last=error_frame(Unauthorized(
                "No auth frame within "
                f"{settings.ws_auth_timeout_seconds:g} s: send {{\"type\": \"auth\", "
                "\"token\": ...} first, or an Authorization header on the upgrade.")))
        elif client.expires_at is not None and now > client.expires_at:
            ws.close(POLICY_VIOLATION, "token expired", last=error_frame(Unauthorized(
                "The bearer token has expired; reconnect with a fresh one.")))
        elif now - ws.last_seen > 2 * settings.ws_heartbeat_seconds:
            # It answers nothing, so it will not answer the close either: a short grace.
            ws.close(POLICY_VIOLATION, "no answer to heartbeat pings",
                     grace=min(1.0, settings.ws_heartbeat_seconds))
        elif now - ws.last_ping >= settings.ws_heartbeat_seconds:
            ws.ping()
