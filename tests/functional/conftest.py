"""Functional tests run against the test Redis (``redis_url``): every process they start,
and this one, point at it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from integration.app import default_registry, get_settings


@pytest.fixture(scope="session", autouse=True)
def test_redis(redis_url: str, test_environment: dict[str, str]) -> Iterator[str]:
    saved = test_environment["INTEGRATION_REDIS_URL"]
    test_environment["INTEGRATION_REDIS_URL"] = os.environ["INTEGRATION_REDIS_URL"] = redis_url
    get_settings.cache_clear()
    default_registry.cache_clear()
    yield redis_url
    test_environment["INTEGRATION_REDIS_URL"] = os.environ["INTEGRATION_REDIS_URL"] = saved
    get_settings.cache_clear()
    default_registry.cache_clear()
