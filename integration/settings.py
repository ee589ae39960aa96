"""The one place that reads the environment (prefix ``INTEGRATION_``).

One module because every setting is a field of one class, whose comments generate the
configuration page; where values come from besides the environment is ``sources``.
"""

from __future__ import annotations

import os
from typing import ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from integration import sources


class Settings(BaseSettings):
    """Every setting of gateway, workers and CLI; ``docs/configuration.md`` is generated from it.

    Each field's ``#:`` comment is its description there, and a ``# -- title --`` line
    starts a section."""

    model_config = SettingsConfigDict(env_prefix="INTEGRATION_", extra="ignore",
                                      populate_by_name=True)

    # ``.env`` keys left out (``integration up`` leaves out those of a deployment).
    dotenv_exclude: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment, then a running ``integration up`` stack's record, then ``.env``
        (``integration.sources`` says why)."""
        record = sources.recorded_stack()
        files = [sources.dotenv_values(sources.env_file(), exclude=cls.dotenv_exclude)]
        if record is not None:
            files.insert(0, record.settings())
        return (init_settings, env_settings,
                *(_VariablesSource(settings_cls, values) for values in files))

    # -- environment, store and broker ---------------------------------------------------------
    #: ``production`` refuses weak secrets and an evicting Redis, and logs JSON; ``integration up``
    #: (``make run``) runs in ``development``.
    env: Literal["development", "production"] = "production"
    #: The status store (records, idempotency keys, breakers, rate limits, schedules), and the
    #: broker unless ``INTEGRATION_BROKER_URL`` is set. ``integration up`` starts an embedded
    #: Redis when this is not set.
    redis_url: str = "redis://localhost:6379/0"
    #: The broker when it is not the store's Redis (``amqp://…`` for RabbitMQ); unset: the store's
    #: Redis.
    broker_url: str | None = None
    #: Redis Sentinel: the sentinels' addresses (``host:port``, separated by commas). Set, every
    #: component asks them for the current master of ``INTEGRATION_REDIS_SENTINEL_MASTER`` and
    #: follows a failover; ``INTEGRATION_REDIS_URL`` then gives only the database, user and
    #: password (its host is not used), and the broker is that master unless
    #: ``INTEGRATION_BROKER_URL`` is set.
    redis_sentinels: str | None = None
    #: Redis Sentinel: the name under which the sentinels monitor the master.
    redis_sentinel_master: str = Field("mymaster", pattern=r"^[A-Za-z0-9_.-]+$")
    #: Redis Sentinel: the password of the sentinels themselves (``requirepass`` in their
    #: configuration), when they have one; the data's password stays in
    #: ``INTEGRATION_REDIS_URL``.
    redis_sentinel_password: SecretStr | None = None
    #: Redis Sentinel: how often an idle connection is checked before use, and how long a
    #: worker's wait for messages may outlast its poll before the connection is replaced: the
    #: bound on noticing a master that vanished without closing its connections.
    redis_health_check_interval_seconds: int = Field(2, ge=1, le=300)
    #: Redis Sentinel: how long a publish through Celery (beat, a direct caller) retries while
    #: a replica is promoted; longer than the sentinels' ``down-after-milliseconds`` plus
    #: their election.
    redis_failover_seconds: float = Field(30.0, gt=0, le=600)
    #: Replicas of the store's Redis that must acknowledge the gateway's writes of a
    #: submission (its record and, on a Redis broker, its enqueue) before it is answered 202:
    #: the gateway calls ``WAIT`` once per flush. On a timeout the answer is a 503 saying the
    #: message was enqueued but is not known to be replicated. 0: no wait. Workers' writes are
    #: not covered.
    redis_replica_wait: int = Field(0, ge=0, le=100)
    #: How long the gateway's replica wait lasts at most, in milliseconds (below
    #: ``INTEGRATION_PUBLISH_TIMEOUT_SECONDS``, which bounds every store call).
    redis_replica_wait_timeout_ms: int = Field(500, ge=1)
    #: RabbitMQ: the type of every queue the service declares (each message type's, each
    #: consumer's, the default queue and Celery's). ``quorum`` replicates them across a
    #: cluster and adds a delivery limit and a dead-letter queue; switching an existing
    #: deployment means deleting its queues first (docs/operations.md). Ignored on a Redis
    #: broker.
    amqp_queue_type: Literal["classic", "quorum"] = "classic"
    #: RabbitMQ quorum queues: deliveries of one message that end without an answer (a worker
    #: killed mid-task, a store outage) beyond which RabbitMQ moves it to the
    #: ``integration.dead-letter`` queue, where a worker records it ``dead``. A backstop for when
    #: the service's own attempt count cannot run; keep it above every type's attempt limit.
    amqp_delivery_limit: int = Field(20, ge=1)
    #: RabbitMQ: the AMQP heartbeat workers ask for, in seconds. A worker gives up a connection
    #: that stayed silent for two of them (its node's host cut off, not closed) and reconnects
    #: to the next node of ``INTEGRATION_BROKER_URL``; until then it takes nothing. 0: none
    #: (a silent node is then noticed only by TCP, in minutes).
    amqp_heartbeat_seconds: int = Field(15, ge=0, le=600)

    # -- tokens and roles ----------------------------------------------------------------------
    #: HMAC secret that verifies bearer tokens. Production refuses a placeholder or one under 128
    #: bits by an entropy estimate (``openssl rand -base64 48``); ``integration up`` generates one.
    jwt_secret: SecretStr | None = None
    #: The tokens' algorithm: one family per deployment, HMAC or asymmetric.
    jwt_algorithm: Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512",
                           "ES256", "ES384", "ES512", "PS256"] = "HS256"
    #: PEM (inline, or a path) that verifies asymmetric tokens.
    jwt_public_key: str | None = None
    #: PEM that lets ``integration token issue`` sign asymmetric tokens.
    jwt_private_key: SecretStr | None = None
    #: JWKS endpoint of an identity provider (instead of a public key); keys are cached and
    #: refetched when a token names an unknown key id.
    jwt_jwks_url: str | None = None
    #: Least time between two refetches of the JWKS for unknown key ids.
    jwt_jwks_refresh_cooldown_seconds: float = Field(30, ge=0)
    #: Required ``iss`` of every token, when set.
    jwt_issuer: str | None = None
    #: Required ``aud`` of every token, when set.
    jwt_audience: str | None = None
    #: Clock skew allowed on ``exp`` and ``nbf``.
    jwt_leeway_seconds: int = Field(10, ge=0, le=300)
    #: The claim holding a token's roles; dotted for a nested claim (``realm_access.roles``).
    jwt_roles_claim: str = "roles"
    #: A token whose signature verified is not verified again for this long (exp is still
    #: checked on every request); 0 verifies every request.
    jwt_verified_cache_seconds: float = Field(300, ge=0)
    #: How long a gateway process trusts a "not revoked" answer for a token id; a revocation
    #: reaches every process within this time (at once in the process that revoked). 0 asks
    #: Redis on every request.
    revocation_check_interval_seconds: float = Field(1.0, ge=0, le=60)
    #: Longest lifetime ``integration token issue`` grants.
    token_max_ttl_seconds: int = Field(24 * 3600, ge=60)
    #: Longest lifetime of ``integration token issue --service`` (senders that cannot refresh,
    #: such as Alertmanager).
    service_token_max_ttl_seconds: int = Field(365 * 24 * 3600, ge=60)
    #: Role policy (YAML or JSON); the shipped ``default_policy.yaml`` when unset.
    policy_file: str | None = None

    # -- request limits ------------------------------------------------------------------------
    #: How Flask-Limiter counts each subject's budget in Redis.
    rate_limit_strategy: Literal["fixed-window", "moving-window",
                                 "sliding-window-counter"] = "sliding-window-counter"
    #: Budget per client address for requests without a valid token.
    anonymous_rate_limit: str = "20/second"
    #: ``X-RateLimit-Limit/Remaining/Reset`` on every response: one more Redis read per
    #: request. A 429 carries ``Retry-After`` either way.
    rate_limit_headers: bool = False
    #: Trusted reverse proxies in front of the gateway (to find the client address).
    proxy_hops: int = Field(0, ge=0, le=5)
    #: Past this many waiting messages in a type's queue, its submissions get 503.
    max_queue_depth: int = Field(100_000, ge=1)
    #: Deepest nesting of any message.
    max_json_depth: int = Field(32, ge=2, le=200)
    #: Longest string in any message.
    max_string_length: int = Field(65_536, ge=64)

    # -- status store --------------------------------------------------------------------------
    #: Prefix of every key the service writes to Redis.
    key_prefix: str = Field("integration", pattern=r"^[A-Za-z0-9_.-]+$")
    #: How long a status record is kept after its last change.
    status_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)
    #: Approximate length of the event log stream ``<KEY_PREFIX>:events``.
    events_stream_maxlen: int = Field(100_000, ge=100)
    #: How long an ``Idempotency-Key`` is remembered; unset: ``INTEGRATION_STATUS_TTL_SECONDS``.
    idempotency_ttl_seconds: int | None = Field(None, ge=60)

    # -- submission and publishing -------------------------------------------------------------
    #: Most messages in one batch (REST, CloudEvents batched mode, Alertmanager, WebSocket).
    batch_limit: int = Field(500, ge=1, le=10_000)
    #: Largest request body, and largest WebSocket frame.
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    #: Messages per broker round trip (one transaction on Redis).
    publish_chunk_size: int = Field(100, ge=1, le=1000)
    #: Bound on connecting to and writing to the broker and the store.
    publish_timeout_seconds: float = Field(3.0, gt=0)
    #: ``Retry-After`` of a 503 answer.
    retry_after_seconds: int = Field(5, ge=1)
    #: Largest page of ``GET /api/v1/messages``.
    list_page_limit: int = Field(100, ge=1, le=1000)

    # -- workers, retries and claims -----------------------------------------------------------
    #: Pool processes per ``celery worker``; unset: Celery's default, the CPU count
    #: (``integration up``: 2).
    worker_concurrency: int | None = Field(None, ge=1)
    #: Celery task events (``task-received``/``-started``/``-succeeded``) from the start. Off,
    #: a worker sends them once a monitor asks (Flower does every few seconds; or ``celery
    #: control enable_events``), so nobody pays for events that no one reads.
    task_events: bool = False
    #: Redis broker: when the broker itself redelivers an unacknowledged message (a backstop;
    #: the reconciler brings back what a dead worker held long before).
    visibility_timeout_seconds: int = Field(3600, ge=10)
    #: Redis broker: how often workers sweep for such messages.
    unacked_restore_interval_seconds: int = Field(10, ge=1)
    #: Attempts of the default retry policy before a message ends ``dead``.
    retry_max_attempts: int = Field(5, ge=1, le=100)
    #: First wait of the default retry policy (exponential backoff with jitter).
    retry_base_delay_seconds: float = Field(1.0, gt=0)
    #: Longest wait of the default retry policy.
    retry_max_delay_seconds: float = Field(300.0, gt=0)
    #: How often workers put messages whose wait is over back into the broker.
    retry_poll_interval_seconds: float = Field(1.0, gt=0)
    #: A delivery's claim on running its message's effect; renewed every third of it while
    #: the handler runs, so a long handler keeps it, and a killed one frees it within this.
    claim_lease_seconds: int = Field(30, ge=3)

    # -- durability: the status store is the ledger; the reconciler keeps the broker honest ----
    #: How often the elected reconciler compares non-final records with what holds them.
    reconcile_interval_seconds: float = Field(10.0, gt=0, le=300)
    #: A non-final record unchanged for this long is checked (younger ones are in flight).
    reconcile_after_seconds: float = Field(30.0, gt=0, le=3600)
    #: How often each worker says it is alive and which messages it holds.
    worker_heartbeat_seconds: float = Field(5.0, gt=0, le=60)
    #: The longest time, after the last fault is repaired, before every accepted message is
    #: final or held by something alive; start-up refuses settings whose bound exceeds it.
    recovery_bound_seconds: float = Field(120.0, gt=0)

    # -- guards on actions: breakers, rate limits, loop detection ------------------------------
    #: Transient failures in a row that open a target's circuit breaker.
    breaker_fail_max: int = Field(5, ge=1)
    #: How long a breaker stays open before one trial call may close it.
    breaker_reset_timeout_seconds: float = Field(30.0, gt=0)
    #: Actions per target (``30/minute``); beyond it, actions wait ``deferred``. Empty: no limit.
    action_rate_limit: str | None = "30/minute"
    #: The same action on the same target more often than this within the window is ``held``.
    loop_limit: int = Field(5, ge=1)
    #: The window of loop detection.
    loop_window_seconds: float = Field(600.0, gt=0)

    # -- message types, events and consumers: subscriptions, webhooks --------------------------
    #: Comma-separated ``module:attribute`` paths of extra message types (no packaging needed).
    type_modules: str = ""
    #: Comma-separated ``module:attribute`` paths of consumers (besides entry points).
    consumer_modules: str = ""
    #: The built-in stages of the self-healing loop to run (empty: none; replace a stage by
    #: leaving it out and subscribing your own consumer to the same topic).
    loop_stages: str = "alerting,diagnosing,planning,recording"
    #: After this long, the outbox delivers a finished message's event again if its
    #: deliveries were not all enqueued (a crashed worker, a broker outage).
    outbox_grace_seconds: float = Field(30.0, gt=0)
    #: A webhook subscription is disabled after this many failed delivery attempts in a row.
    webhook_disable_after: int = Field(20, ge=1)
    #: Bound on one webhook delivery's POST.
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=120)
    #: Also sign deliveries with the deprecated ``X-Integration-Signature`` header, besides the
    #: Standard Webhooks headers; on until version 0.3.0, which removes it. Turn it off once
    #: every receiver verifies ``webhook-signature``.
    webhook_legacy_signature: bool = True

    # -- WebSocket gateway ---------------------------------------------------------------------
    #: gevent: one greenlet per connection, so open WebSockets do not take HTTP's threads;
    #: gthread: a thread per request (WebSockets are then refused with 503).
    gateway_worker_class: Literal["gevent", "gthread"] = "gevent"
    #: Concurrent connections (HTTP and WebSocket) per gevent worker process.
    gateway_worker_connections: int = Field(2000, ge=10)
    #: Frames (events, acks, errors) waiting for one slow socket; past it the client is dropped.
    ws_max_buffer: int = Field(256, ge=1, le=100_000)
    #: A frame that cannot be written within this long means the client stopped reading.
    ws_send_timeout_seconds: float = Field(10.0, gt=0)
    #: A ping every interval; a client silent for two intervals is dropped.
    ws_heartbeat_seconds: float = Field(20.0, gt=0)
    #: Time for an auth frame when the upgrade request carried no Authorization header.
    ws_auth_timeout_seconds: float = Field(5.0, gt=0)
    #: Open sockets per gateway process; more are refused (503) so HTTP keeps its capacity.
    ws_max_connections: int = Field(1000, ge=1)
    #: How long the event reader blocks on the stream per round trip (milliseconds).
    ws_read_block_ms: int = Field(1000, ge=10, le=30_000)

    # -- input adapters: Alertmanager, CloudEvents ---------------------------------------------
    #: Alertmanager re-sends a group on every change and every repeat_interval; the same alert
    #: (fingerprint and status) posted again within this many seconds is a duplicate. 0: off.
    alertmanager_dedup_seconds: int = Field(6 * 3600, ge=0)

    # -- egress (webhooks, http executor) and the self-healing rules ---------------------------
    #: Comma-separated CIDRs and host names that outbound calls may reach although they are
    #: loopback, private, link-local or otherwise internal (refused by default: no request
    #: forgery against the service's own network).
    egress_allowlist: str = ""
    #: Connect timeout of every outbound call.
    egress_connect_timeout_seconds: float = Field(3.0, gt=0, le=60)
    #: How much of a response body is read; the rest is never downloaded.
    egress_max_response_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: An HTTP proxy for every outbound call, ``http://[user:password@]host:port`` (the
    #: credentials are never logged); the egress policy still checks each target first.
    #: Empty: straight to the target. Proxy environment variables are not read.
    egress_proxy: SecretStr | None = None
    #: The shared rules file: declared action targets (``targets:``), thresholds, diagnoses
    #: and playbooks (YAML); the shipped ``default_rules.yaml`` when unset (no http target).
    rules_file: str | None = None
    #: How long one series' threshold state outlives its last sample (abandoned series expire).
    rules_state_ttl_seconds: int = Field(24 * 3600, ge=60)

    # -- schedules (Celery beat) ---------------------------------------------------------------
    #: Schedules (YAML) synced into Redis when beat starts; the shipped
    #: ``default_schedule.yaml`` (one hourly heartbeat event) when unset.
    schedule_file: str | None = None
    #: Beat re-reads the schedules from Redis at least this often: a schedule created, paused
    #: or deleted at run time takes effect within this long.
    beat_max_loop_interval_seconds: float = Field(5.0, gt=0, le=300)
    #: The active beat renews its lock every loop; a beat that dies without releasing it
    #: (SIGKILL, lost host) is replaced by a standby after at most this long.
    beat_lock_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    #: What a firing missed while no beat ran becomes: ``once`` (caught up once, however many
    #: were missed) or ``skip`` (dropped); a schedule's ``catch_up`` overrides it.
    beat_catch_up: Literal["once", "skip"] = "once"
    #: A firing later than this (or later than one period of its schedule) counts as missed.
    beat_missed_after_seconds: float = Field(60.0, gt=0)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str) -> str:
        return _with_scheme(url, "INTEGRATION_REDIS_URL", _REDIS_SCHEMES)

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, url: str | None) -> str | None:
        from kombu.transport import TRANSPORT_ALIASES

        first = (*_REDIS_SCHEMES, "amqp", "amqps")
        schemes = (*first, *sorted({a.lower() for a in TRANSPORT_ALIASES} - set(first)))
        return None if url is None else _with_scheme(url, "INTEGRATION_BROKER_URL", schemes)

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_addresses(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            _addresses(value)
            return value
        return None

    @model_validator(mode="after")
    def _replica_wait_within_timeout(self) -> Settings:
        # The store's socket timeout would cut a longer wait short as a lost connection.
        if self.redis_replica_wait and \
                self.redis_replica_wait_timeout_ms >= self.publish_timeout_seconds * 1000:
            raise ValueError("INTEGRATION_REDIS_REPLICA_WAIT_TIMEOUT_MS must be below "
                             "INTEGRATION_PUBLISH_TIMEOUT_SECONDS")
        return self

    @model_validator(mode="after")
    def _beat_lock_outlives_loop(self) -> Settings:
        # The lock is renewed once per loop: shorter than two loops, a healthy beat loses it.
        if self.beat_lock_timeout_seconds < 2 * self.beat_max_loop_interval_seconds:
            raise ValueError("INTEGRATION_BEAT_LOCK_TIMEOUT_SECONDS must be at least twice "
                             "INTEGRATION_BEAT_MAX_LOOP_INTERVAL_SECONDS")
        return self


    # -- other secrets of the production stack (Flower, Grafana, the Redis exporter) ----------
    #: Flower's login (``user:password``; several separated by commas), as Flower reads it.
    flower_basic_auth: SecretStr | None = Field(None, validation_alias="FLOWER_BASIC_AUTH")
    #: Grafana's admin password, which docker-compose gives Grafana.
    grafana_admin_password: SecretStr | None = Field(None,
                                                     validation_alias="GRAFANA_ADMIN_PASSWORD")
    #: The Redis password of the metrics exporter's ACL user, which docker-compose gives Redis
    #: and the exporter.
    redis_exporter_password: SecretStr | None = Field(
        None, validation_alias="REDIS_EXPORTER_PASSWORD")

    # -- operations: check, lifecycle ----------------------------------------------------------
    #: The NO_COLOR convention (no-color.org): any non-empty value turns the CLI's colours off.
    no_color: str = Field("", validation_alias="NO_COLOR")

    # -- performance and the benchmark ---------------------------------------------------------
    #: Submissions of concurrent requests in one gateway process are recorded and enqueued
    #: together, up to this many messages per flush (0: every request on its own).
    submit_coalesce_messages: int = Field(500, ge=0, le=10_000)
    #: The Redis ``make bench`` measures against; unset: it starts a redis-server of its own.
    bench_redis_url: str | None = None
    #: RabbitMQ for the benchmark's RabbitMQ figures (skipped when it cannot be reached).
    bench_amqp_url: str = "amqp://guest:guest@127.0.0.1:5672//"

    # -- logs ----------------------------------------------------------------------------------
    #: Level of every process's logs.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: ``json`` (one object per line) or ``console``; unset: console in development, json
    #: otherwise.
    log_format: Literal["json", "console"] | None = None
    #: Celery's own "Task ... received" and "Task ... succeeded in ..." INFO lines, which
    #: repeat what the worker's structured ``processed`` line says.
    celery_task_logs: bool = False
    #: Comma-separated ``module:factory`` paths, each called without arguments at start-up
    #: for a ``logging.Handler`` attached to the root logger (Sentry's, OpenTelemetry's
    #: ``LoggingHandler``, one's own): it receives every record, with the bound context.
    log_handlers: str = ""

    # -- gateway server ------------------------------------------------------------------------
    #: Address the gateway listens on.
    host: str = "127.0.0.1"
    #: Port the gateway listens on.
    port: int = Field(8000, ge=1, le=65535)
    #: gunicorn worker processes of the gateway.
    gateway_workers: int = Field(2, ge=1)
    #: Threads per gateway process; ``gthread`` only.
    gateway_threads: int = Field(4, ge=1)
    #: Each gateway process listens on the port itself (SO_REUSEPORT, Linux), so the kernel
    #: spreads new connections across processes; with one shared socket, the first process
    #: to wake could take every keep-alive connection of a client pool.
    gateway_reuse_port: bool = True
    #: Gateway: time to finish in-flight requests after SIGTERM. Worker: time for its background
    #: loop to finish its pass.
    graceful_timeout_seconds: int = Field(30, ge=1)

    # -- metrics -------------------------------------------------------------------------------
    #: Each worker's metrics endpoint (celery-exporter uses 9808); 0 turns it off.
    metrics_port: int = Field(9810, ge=0, le=65535)
    #: Address of each worker's metrics endpoint.
    metrics_host: str = "127.0.0.1"
    #: A worker's prometheus_client multiprocess directory; unset: a temporary one.
    worker_metrics_dir: str | None = None
    #: Serve the gateway's metrics (summed over its processes) on this port instead of on
    #: ``/metrics`` of the public port.
    gateway_metrics_port: int | None = Field(None, ge=1, le=65535)
    #: Address of that metrics port.
    gateway_metrics_host: str = "127.0.0.1"
    #: prometheus_client's own variable: where gunicorn's processes share their metrics;
    #: ``integration serve`` makes a temporary one when unset.
    prometheus_multiproc_dir: str | None = Field(None, validation_alias="PROMETHEUS_MULTIPROC_DIR")

    # -- tracing -------------------------------------------------------------------------------
    #: OpenTelemetry: the OTLP/HTTP base URL spans are exported to (``/v1/traces`` is added, as
    #: for ``OTEL_EXPORTER_OTLP_ENDPOINT``), e.g. ``http://otel-collector:4318``. Unset: no
    #: spans, and the SDK is not loaded; a ``traceparent`` still travels with each message.
    #: Needs the ``tracing`` extra.
    otlp_endpoint: str | None = Field(None, pattern=r"^https?://")
    #: OpenTelemetry's own variable: the ``service.name`` of every span; unset:
    #: ``integration-gateway`` or ``integration-worker``.
    otel_service_name: str | None = Field(None, validation_alias="OTEL_SERVICE_NAME")

    # -- development stack ---------------------------------------------------------------------
    #: Where ``integration up`` keeps the embedded Redis's data and the development JWT secret.
    run_dir: str = ".run"

    @property
    def broker(self) -> str:
        """The broker URL: ``BROKER_URL`` when set, otherwise the store's Redis (through the
        sentinels, ``sentinel://…``, when they are set)."""
        if self.broker_url:
            return self.broker_url
        if self.sentinels:
            return sentinel_broker_url(self.redis_url, self.sentinels)
        return self.redis_url

    @property
    def broker_connect_seconds(self) -> float:
        """How long a broker connection made on demand may take: one connect timeout per
        node of a RabbitMQ URL naming several (``amqp://a;amqp://b``), tried in turn."""
        nodes = len(self.broker.split(";")) if on_amqp(self.broker) else 1
        return self.publish_timeout_seconds * nodes

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """The sentinels' addresses; empty without Sentinel."""
        return _addresses(self.redis_sentinels) if self.redis_sentinels else []

    @property
    def quorum_queues(self) -> bool:
        """Quorum queues are asked for and the broker is RabbitMQ."""
        return self.amqp_queue_type == "quorum" and on_amqp(self.broker)


class DevStackSettings(Settings):
    """Settings of ``integration up``: a deployment's connection and secret keys in ``.env``
    are ignored (``sources.DEPLOYMENT_KEYS``)."""

    dotenv_exclude = sources.DEPLOYMENT_KEYS


class _VariablesSource(EnvSettingsSource):
    """Settings from a mapping of environment-style variables (a record, a dotenv file), read
    exactly as the environment is (prefix, aliases, JSON values)."""

    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, str]) -> None:
        super().__init__(settings_cls)
        self.env_vars = {k.lower(): v for k, v in values.items()}


def _addresses(value: str) -> list[tuple[str, int]]:
    """``host:port`` pairs separated by commas (``[::1]:26379`` for IPv6)."""
    addresses = []
    for item in (part.strip() for part in value.split(",")):
        host, colon, port = item.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"INTEGRATION_REDIS_SENTINELS: {item!r} is not host:port "
                             "(write host:26379,host:26379,…)")
        addresses.append((host.removeprefix("[").removesuffix("]"), int(port)))
    return addresses


def sentinel_broker_url(redis_url: str, sentinels: list[tuple[str, int]]) -> str:
    """kombu's URL of the master behind ``sentinels``, with ``redis_url``'s credentials and
    database: ``sentinel://[user:password@]host:port/db`` for each sentinel, joined by ``;``."""
    parts = urlsplit(redis_url)
    userinfo = parts.netloc.rpartition("@")[0]
    db = parts.path.strip("/") or "0"
    if parts.scheme == "unix":
        db = dict(parse_qsl(parts.query)).get("db", "0")
    at = f"{userinfo}@" if userinfo else ""
    return ";".join(f"sentinel://{at}{_bracketed(host)}:{port}/{db}" for host, port in sentinels)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


#: The schemes redis-py takes (a URL without one fails at the first connection).
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def on_amqp(url: str) -> bool:
    """Whether a broker URL names RabbitMQ (AMQP 0.9.1)."""
    return url.partition("://")[0].lower() in ("amqp", "amqps", "pyamqp")


def _with_scheme(url: str, variable: str, schemes: tuple[str, ...]) -> str:
    """``url`` when it starts with one of ``schemes``; otherwise the error says what to write
    (the password of the URL never in it)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in schemes:
        return url
    userinfo, at, host = (rest if sep else url).rpartition("@")
    user, colon, _ = userinfo.partition(":")
    shown = (f"{user}:***@" if colon else "***@") + host if at else (rest if sep else url)
    if not sep:
        fix = f"redis://{shown}{'' if '/' in shown else '/0'}"
        if "amqp" in schemes:
            fix = f"amqp://{shown}// (RabbitMQ) or {fix}"
        raise ValueError(f"{variable} {shown!r} has no scheme: write {fix}")
    listed = ", ".join(s + "://" for s in schemes[:6]) + (", …" if len(schemes) > 6 else "")
    raise ValueError(f"{variable} has the scheme {scheme!r}, not one of {listed}: write "
                     f"{schemes[0]}://{shown}")


class ConfigurationError(RuntimeError):
    """The configuration cannot work; the message says which variable to set and how."""


#: Prefix of the variables a targets file may name as ``${NAME}`` (secret header values).
SECRET_PREFIX = "INTEGRATION_SECRET_"


def environment_secret(name: str) -> SecretStr | None:
    """``INTEGRATION_SECRET_<NAME>`` from the environment, for a file that names ``${NAME}``.

    Only this prefix is readable, so a rules file cannot copy the service's own secrets
    (``INTEGRATION_JWT_SECRET``) or unrelated credentials into an outbound request.
    """
    value = os.environ.get(SECRET_PREFIX + name)
    return SecretStr(value) if value is not None else None
