"""Property-based run of the OpenAPI document against the real gateway (schemathesis).

Generated requests, valid and invalid, must never produce a server error, invalid data must
be refused, every operation must refuse requests without a valid token, and every answer must
conform to the document: its status, content type, headers and body schema. Each operation
gets a bounded number of examples in each generation mode, and the run a wall-clock budget.
Generated requests seldom reach the states that matter most (an accepted message, a dead
letter), so those answers are checked from requests made on purpose, with the same checks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import wait_status
from tests.support.http_target import RecordingServer

CONFORMANCE = [response_schema_conformance, status_code_conformance,
               content_type_conformance, response_headers_conformance]
CHECKS = [not_a_server_error, negative_data_rejection, ignored_auth, *CONFORMANCE]
EXAMPLES = 25
#: Wall-clock budget of one generation mode's run: past it, the remaining examples are not
#: sent (the run stays near its usual length on a slow machine).
BUDGET_SECONDS = 15


@pytest.fixture
def schema(make_app: Callable[..., Flask]) -> Any:
    # Requests without a token are limited per address; this run sends hundreds of them.
    app = make_app(anonymous_rate_limit="100000/second")
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


@pytest.fixture
def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", list(GenerationMode))
def test_generated_requests_hold(operations: list[Any], token: str,
                                 mode: GenerationMode) -> None:
    """Generated requests never get a 5xx, invalid ones are refused, and every answer
    conforms to the document."""
    assert len(operations) >= 5
    headers = {"Authorization": f"Bearer {token}"}
    calls: list[int] = []
    deadline = time.monotonic() + BUDGET_SECONDS
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            if time.monotonic() < deadline:
                calls.append(case.call_and_validate(headers=headers, checks=CHECKS)
                             .status_code)

        run()
    # The run really exercised the API, and in negative mode mostly with refusals.
    assert len(calls) >= 2 * len(operations)
    if mode is GenerationMode.NEGATIVE:
        assert sum(400 <= code < 500 for code in calls) >= len(calls) // 2


@pytest.fixture
def receiver() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


def test_answers_in_the_states_that_matter_conform(
        schema: Any, token: str, client: FlaskClient, auth: dict[str, str], worker: Any,
        receiver: RecordingServer) -> None:
    """A single message's 202 and a batch's, a dead letter listed, shown and replayed, a
    trace, a schedule and a subscription through their lives, a subject revoked: each
    answer conforms to the document."""
    headers = {"Authorization": f"Bearer {token}"}
    seen: list[tuple[str, int]] = []

    def call(path: str, method: str, expected: int, **parts: Any) -> Any:
        response = schema[path][method].Case(**parts).call_and_validate(
            headers=headers, checks=[not_a_server_error, *CONFORMANCE])
        seen.append((f"{method} {path}", response.status_code))
        assert response.status_code == expected, (path, method, response.text[:300])
        return response.json() if response.content else None

    single = call("/api/v1/messages", "POST", 202, media_type="application/json",
                  body={"type": "event", "source": "conformance", "data": {"n": 1}})
    call("/api/v1/messages", "POST", 202, media_type="application/json",
         body=[{"type": "event", "source": "conformance", "data": {}},
               {"type": "no-such-type", "source": "conformance", "data": {}}])
    by_id = {"path_parameters": {"message_id": single["id"]}}
    wait_status(client, auth, single["id"])
    call("/api/v1/messages/{message_id}", "GET", 200, **by_id)
    call("/api/v1/messages/{message_id}/trace", "GET", 200, **by_id)
    call("/api/v1/messages", "GET", 200, query={"type": "event", "limit": 5})

    dead = client.post("/api/v1/messages", headers=auth, json={
        "type": "test.buggy", "source": "conformance",
        "data": {"key": uuid.uuid4().hex}}).get_json()["id"]
    wait_status(client, auth, dead)
    letter = {"path_parameters": {"message_id": dead}}
    listed = call("/api/v1/dead-letters", "GET", 200, query={"type": "test.buggy"})
    assert dead in [item["id"] for item in listed["items"]]
    call("/api/v1/dead-letters/{message_id}", "GET", 200, **letter)
    call("/api/v1/dead-letters/{message_id}/replay", "POST", 202, **letter)
    wait_status(client, auth, dead)
    call("/api/v1/dead-letters/replay", "POST", 202, media_type="application/json",
         body={"type": "test.buggy", "limit": 1})

    name = f"conformance-{uuid.uuid4().hex[:6]}"
    schedule = {"path_parameters": {"name": name}}
    call("/api/v1/schedules", "POST", 201, media_type="application/json",
         body={"name": name, "every": 3600, "type": "event", "data": {}})
    call("/api/v1/schedules", "GET", 200)
    call("/api/v1/schedules/{name}/pause", "POST", 200, **schedule)
    call("/api/v1/schedules/{name}/resume", "POST", 200, **schedule)
    call("/api/v1/schedules/{name}", "DELETE", 204, **schedule)

    hook = call("/api/v1/subscriptions", "POST", 201, media_type="application/json",
                body={"url": receiver.url("/hook"), "topics": ["conformance.*"]})
    webhook = {"path_parameters": {"webhook_id": hook["id"]}}
    call("/api/v1/subscriptions/{webhook_id}", "GET", 200, **webhook)
    call("/api/v1/subscriptions/{webhook_id}/enable", "POST", 200, **webhook)
    call("/api/v1/subscriptions/{webhook_id}", "DELETE", 204, **webhook)

    call("/api/v1/types", "GET", 200)
    call("/api/v1/breakers", "GET", 200)
    call("/api/v1/tokens/revocations", "POST", 200, media_type="application/json",
         body={"subject": f"gone-{uuid.uuid4().hex[:6]}"})
    call("/api/v1/tokens/{jti}", "DELETE", 204, path_parameters={"jti": uuid.uuid4().hex})
    assert len(seen) >= 20
