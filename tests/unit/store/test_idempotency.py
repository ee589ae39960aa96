"""Idempotency keys' stored answers: written for every answer the gateway could send."""

from __future__ import annotations

import json

from integration.store.idempotency import Stored


def test_an_answer_orjson_refuses_is_stored_by_the_standard_library() -> None:
    """A value orjson cannot write (an integer past 64 bits) falls back, and reads back."""
    stored = Stored("done", "digest", 202, {"results": [{"n": 2**70}]}, "/api/v1/messages/x")
    assert json.loads(stored.to_json()) == stored.__dict__
