"""Action executors: they run only targets declared in the rules file, never a URL from a message.

The rules file (``INTEGRATION_RULES_FILE``) declares targets under its top-level ``targets:``
key; its other keys (the self-healing rules) are read elsewhere and ignored here. An action
names a target; the ``http`` executor calls that target's declared URL through ``Egress``
with the declared method, headers and body template, so a message chooses *which* declared
call runs, never *what* is called.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from integration import logs, tracing
from integration.loop.payloads import ActionPayload
from integration.messages import effects
from integration.messages.envelope import Envelope
from integration.messages.retry import PermanentError
from integration.mistakes import file_problem
from integration.security.egress import Egress
from integration.security.egress_policy import EgressRefused
from integration.settings import ConfigurationError, Settings, environment_secret

log = logs.get_logger(__name__)

#: How much of a response body an action's result keeps (the egress reads up to its own limit).
RESULT_EXCERPT_CHARS = 2048

TargetName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")]
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_SECRET_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# {target}, {action}, {parameters.NAME}…; {{ and }} are literal braces.
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([a-z_]+(?:\.[A-Za-z0-9_-]+)?)\}")
_PLACEHOLDERS = frozenset({"target", "action", "message_id", "correlation_id"})


class UndeclaredTarget(PermanentError):
    """The action names a target that the rules file does not declare for its executor."""


class TargetSpec(BaseModel):
    """One declared target: which executor runs it and, for ``http``, the exact call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    executor: Literal["http", "log", "noop"]
    url: str | None = Field(None, max_length=2048)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    # Below the visibility timeout, past which the broker would deliver the message again
    # while the call still runs (the renewed claim keeps that copy waiting, not running).
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    #: Values are secrets: never logged, never in results (``${NAME}`` is filled at load).
    headers: dict[HeaderName, SecretStr] = Field(default_factory=dict, max_length=50)
    #: JSON sent as the request body; string values may hold placeholders (see ``render``).
    body: Any = None

    @field_validator("headers")
    @classmethod
    def _headers_allowed(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in headers.items():
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name} is set by the connection")
            if any(c in value.get_secret_value() for c in "\r\n\0"):
                raise ValueError(f"header {name} contains a line break")
        return headers

    @field_validator("body")
    @classmethod
    def _placeholders_known(cls, body: Any) -> Any:
        for text in _strings(body):
            for match in _PLACEHOLDER.finditer(text):
                name = match.group(1)
                if name and name not in _PLACEHOLDERS and not name.startswith("parameters."):
                    raise ValueError(f"unknown placeholder {{{name}}}; use one of "
                                     + ", ".join(sorted(_PLACEHOLDERS)) + ", parameters.NAME")
        return body

    @model_validator(mode="after")
    def _url_fits_executor(self) -> TargetSpec:
        if self.executor == "http":
            if not self.url or not re.match(r"^https?://", self.url, re.IGNORECASE):
                raise ValueError("an http target needs an http:// or https:// url")
            if "@" in self.url.split("/", 3)[2]:
                raise ValueError("the url must not carry user:password@; use a header")
        elif self.url is not None:
            raise ValueError(f"a {self.executor} target has no url")
        return self

    def secret_values(self) -> list[str]:
        return [v.get_secret_value() for v in self.headers.values() if v.get_secret_value()]


class Targets(BaseModel):
    """The ``targets:`` of the rules file, by name; every other top-level key is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    targets: dict[TargetName, TargetSpec] = Field(default_factory=dict)

    @field_validator("targets", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @classmethod
    def load(cls, path: str | Path,
             secret: Callable[[str], SecretStr | None] = environment_secret) -> Targets:
        """Read the file; ``${NAME}`` in header values comes from ``secret`` (by default the
        environment variable ``INTEGRATION_SECRET_<NAME>``). Any problem is a
        ``ConfigurationError`` naming the file and the place in it."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(
                f"INTEGRATION_RULES_FILE: cannot read {path}: {exc.strerror or exc}") from None
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"INTEGRATION_RULES_FILE {path}: {file_problem(exc)}"
                                     ) from None
        if document is None:
            document = {}
        if not isinstance(document, dict):
            raise ConfigurationError(f"{path}: the top level must be a mapping with `targets:`")
        return cls.from_document(document, source=str(path), secret=secret)

    @classmethod
    def from_document(cls, document: Mapping[str, Any], *, source: str = "rules file",
                      secret: Callable[[str], SecretStr | None] = environment_secret
                      ) -> Targets:
        """Validate a parsed rules document (only its ``targets:``)."""
        declared = document.get("targets")
        if isinstance(declared, dict):
            declared = {name: _with_secrets(spec, name, source, secret)
                        for name, spec in declared.items()}
        try:
            return cls.model_validate({"targets": declared})
        except ValidationError as exc:
            # Only where and what: the input may hold a secret header value.
            problems = "; ".join(
                ".".join(str(p) for p in error["loc"]) + ": " + error["msg"]
                for error in exc.errors(include_input=False, include_url=False))
            raise ConfigurationError(f"{source}: {problems}") from None

    def get(self, name: str, executor: str) -> TargetSpec:
        """The target ``name`` declared for ``executor``, or ``UndeclaredTarget``."""
        spec = self.targets.get(name)
        if spec is None:
            raise UndeclaredTarget(
                f"target {name!r} is not declared: an {executor} action runs only targets "
                "listed under `targets:` in INTEGRATION_RULES_FILE")
        if spec.executor != executor:
            raise UndeclaredTarget(f"target {name!r} is declared for the {spec.executor} "
                                   f"executor, not {executor}")
        return spec


def _with_secrets(spec: Any, name: str, source: str,
                  secret: Callable[[str], SecretStr | None]) -> Any:
    """Fill ``${NAME}`` in header values; a missing variable is a configuration error."""
    if not isinstance(spec, dict) or not isinstance(spec.get("headers"), dict):
        return spec

    def fill(match: re.Match[str]) -> str:
        value = secret(match.group(1))
        if value is None:
            raise ConfigurationError(
                f"{source}: targets.{name}.headers uses ${{{match.group(1)}}}; set the "
                f"environment variable INTEGRATION_SECRET_{match.group(1)}")
        return value.get_secret_value()

    headers = {header: _SECRET_REFERENCE.sub(fill, value) if isinstance(value, str) else value
               for header, value in spec["headers"].items()}
    return {**spec, "headers": headers}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def render(template: Any, values: Mapping[str, Any]) -> Any:
    """Fill placeholders in the string values of a JSON template.

    A string that is exactly one placeholder takes the value as it is (a number stays a
    number); inside longer text the value is written as text. Only the named values are
    reachable: no attribute access, no format specs.
    """
    if isinstance(template, dict):
        return {key: render(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, values) for value in template]
    if not isinstance(template, str):
        return template
    whole = _PLACEHOLDER.fullmatch(template)
    if whole and whole.group(1):
        return _value(whole.group(1), values)

    def fill(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return match.group(0)[0]
        value = _value(match.group(1), values)
        return value if isinstance(value, str) else _json_text(value)

    return _PLACEHOLDER.sub(fill, template)


def _value(name: str, values: Mapping[str, Any]) -> Any:
    if name.startswith("parameters."):
        parameters = values.get("parameters") or {}
        key = name.split(".", 1)[1]
        if key not in parameters:
            raise PermanentError(f"the target's body needs parameter {key!r}, which the action "
                                 "does not have")
        return parameters[key]
    return values.get(name)


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _redacted(text: str, secrets: list[str]) -> str:
    """A target that echoes its request must not put a declared secret into a result."""
    for value in secrets:
        text = text.replace(value, "[redacted]")
    return text


def execute(payload: ActionPayload, spec: TargetSpec, egress: Egress | None, *,
            envelope: Envelope | None = None) -> dict[str, Any]:
    """Run an action on its declared target and return the JSON result.

    ``http``: one request as declared; a 2xx succeeds, 5xx/408/429 and connection failures
    are retried (the target's breaker counts them), anything else ends the message dead.
    ``log`` and ``noop`` make no call. Header values never appear in the result.
    """
    result: dict[str, Any] = {
        "action": payload.action, "target": payload.target, "executor": spec.executor,
        "executed": False, "dry_run": payload.dry_run, "parameters": payload.parameters,
    }
    if spec.executor == "log":
        log_action(payload)
    if spec.executor != "http" or payload.dry_run:
        result["executed"] = spec.executor != "http" and not payload.dry_run
        if spec.executor == "http":
            result["would_call"] = {"method": spec.method, "url": _without_query(spec.url)}
        return result

    if egress is None or spec.url is None:  # TargetSpec requires a url for http
        raise ValueError("an http target needs an Egress and a url")
    values = {"target": payload.target, "action": payload.action,
              "parameters": payload.parameters,
              "message_id": envelope.id if envelope else None,
              "correlation_id": envelope.correlationid if envelope else None}
    body = render(spec.body, values) if spec.body is not None else None
    headers = {name: value.get_secret_value() for name, value in spec.headers.items()}
    if envelope is not None:
        # A redelivery after a lost worker may call again: the same key (message id and
        # generation) lets the downstream deduplicate; a replay is a new generation.
        headers.setdefault("Idempotency-Key", effects.idempotency_key(envelope.id))
    with tracing.span(spec.method, "client", attributes={
            "http.request.method": spec.method, "integration.target": payload.target}) as span:
        # The target continues the trace (its W3C headers win over declared ones).
        headers.update(tracing.headers())
        try:
            response = egress.request(spec.method, spec.url, json_body=body, headers=headers,
                                      timeout=spec.timeout_seconds)
        except EgressRefused as exc:
            raise EgressRefused(f"target {payload.target!r}: {exc}") from None
        if span is not None:
            span.set_attribute("http.response.status_code", response.status)
    secrets = spec.secret_values()
    excerpt = _redacted(response.text(RESULT_EXCERPT_CHARS), secrets)
    response.raise_for_status(f"target {payload.target!r} ({response.url})",
                              excerpt=excerpt[:200])
    result.update(
        executed=True, method=spec.method, url=response.url, status=response.status,
        duration_ms=response.duration_ms,
        response={"content_type": response.headers.get("content-type"),
                  "excerpt": excerpt, "truncated": response.truncated or
                  len(response.body) > RESULT_EXCERPT_CHARS},
    )
    return result


def _without_query(url: str | None) -> str | None:
    return url.split("?", 1)[0].split("#", 1)[0] if url else url


_SECRETISH = ("authorization", "token", "password", "secret", "key")


def log_action(payload: ActionPayload) -> None:
    """The ``log`` executor: the action as one structured log line, secret-looking values
    masked (a log is read by more people than the status store)."""
    parameters = {name: "[redacted]" if any(s in name.lower() for s in _SECRETISH) else value
                  for name, value in payload.parameters.items()}
    log.info("action", action=payload.action, target=payload.target,
             parameters=parameters, dry_run=payload.dry_run)


def load_targets(settings: Settings) -> Targets:
    """The targets of the rules file of ``settings``; none without a file."""
    targets = Targets.load(settings.rules_file) if settings.rules_file else Targets()
    check_timeouts(targets, settings.visibility_timeout_seconds, str(settings.rules_file))
    return targets


def check_timeouts(targets: Targets, visibility: int, source: str) -> None:
    """Refuse an http target whose timeout reaches the visibility timeout
    (``ConfigurationError``)."""
    for name, spec in targets.targets.items():
        # Past the visibility timeout the broker delivers the message again mid-call.
        if spec.executor == "http" and spec.timeout_seconds >= visibility:
            raise ConfigurationError(
                f"{source}: targets.{name}.timeout_seconds ({spec.timeout_seconds:g})"
                f" must be shorter than INTEGRATION_VISIBILITY_TIMEOUT_SECONDS ({visibility})")


def run_action(payload: ActionPayload, envelope: Envelope | None = None, *,
               targets: Callable[[], Targets], egress: Callable[[], Egress]) -> dict[str, Any]:
    """What the built-in ``action`` handler does: look up, then execute the declared target
    (``targets`` and ``egress`` give this process's, built on first use).

    ``noop`` and ``log`` need no declaration (they call nothing); ``http`` runs only a target
    declared for it.
    """
    if payload.executor != "http":
        return execute(payload, TargetSpec(executor=payload.executor), None, envelope=envelope)
    try:
        declared = targets()
    except ConfigurationError as exc:
        # Dead at once with the reason, and not counted by the target's breaker: retrying
        # cannot fix the file. Failures are not cached, so the next message loads a fixed
        # file, and the dead one can be replayed.
        raise PermanentError(f"the targets file does not load: {exc}") from None
    spec = declared.get(payload.target, payload.executor)
    try:
        way_out = egress()
    except ConfigurationError as exc:  # the allowlist or the proxy setting: the same reasoning
        raise PermanentError(f"the egress settings are unusable: {exc}") from None
    return execute(payload, spec, way_out, envelope=envelope)
