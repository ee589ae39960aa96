"""Property-based run of the OpenAPI document against the real gateway (schemathesis).

Generated requests, valid and invalid, must never produce a server error, invalid data must
be refused, and every operation must refuse requests without a valid token. Each operation
gets a bounded number of examples in each generation mode, so the run stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import ignored_auth, negative_data_rejection, not_a_server_error

CHECKS = [not_a_server_error, negative_data_rejection, ignored_auth]
EXAMPLES = 25


@pytest.fixture
def operations(make_app: Callable[..., Flask]) -> list[Any]:
    # Requests without a token are limited per address; this run sends hundreds of them.
    app = make_app(anonymous_rate_limit="100000/second")
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", list(GenerationMode))
def test_generated_requests_hold(operations: list[Any], token: str,
                                 mode: GenerationMode) -> None:
    assert len(operations) >= 5
    headers = {"Authorization": f"Bearer {token}"}
    calls: list[int] = []
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            calls.append(case.call_and_validate(headers=headers, checks=CHECKS).status_code)

        run()
    # The run really exercised the API, and in negative mode mostly with refusals.
    assert len(calls) >= 2 * len(operations)
    if mode is GenerationMode.NEGATIVE:
        assert sum(400 <= code < 500 for code in calls) >= len(calls) // 2
