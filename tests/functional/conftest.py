"""Functional tests run against the test Redis (``redis_url``): every process they start,
and this one, point at it. The compose tests share the compose files as docker-compose
resolves them."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from integration.app import default_registry, get_settings
from tests.functional.test_compose import COMPOSE, HA, RABBITMQ, resolve


@pytest.fixture(scope="session", autouse=True)
def test_redis(redis_url: str, test_environment: dict[str, str]) -> Iterator[str]:
    saved = test_environment["INTEGRATION_REDIS_URL"]
    test_environment["INTEGRATION_REDIS_URL"] = os.environ["INTEGRATION_REDIS_URL"] = redis_url
    get_settings.cache_clear()
    default_registry.cache_clear()
    # celeryconfig reads the settings once, when imported: a unit test that imported it
    # before (tasks/) saw the unit tests' unreachable Redis.
    sys.modules.pop("celeryconfig", None)
    yield redis_url
    test_environment["INTEGRATION_REDIS_URL"] = os.environ["INTEGRATION_REDIS_URL"] = saved
    get_settings.cache_clear()
    default_registry.cache_clear()
    sys.modules.pop("celeryconfig", None)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """docker-compose.yml as docker-compose resolves it, with .env.example as the .env."""
    return resolve(tmp_path_factory, COMPOSE)


@pytest.fixture(scope="module")
def on_rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """docker-compose.yml with the RabbitMQ override, as docker-compose resolves them."""
    return resolve(tmp_path_factory, COMPOSE, RABBITMQ)


@pytest.fixture(scope="module")
def highly_available(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """docker-compose.ha.yml as docker-compose resolves it, with .env.example as the .env."""
    return resolve(tmp_path_factory, HA)
