"""Fixtures shared by the compose tests: the compose files as docker-compose resolves them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.functional.test_compose import COMPOSE, RABBITMQ, resolve


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """docker-compose.yml as docker-compose resolves it, with .env.example as the .env."""
    return resolve(tmp_path_factory, COMPOSE)


@pytest.fixture(scope="module")
def on_rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """docker-compose.yml with the RabbitMQ override, as docker-compose resolves them."""
    return resolve(tmp_path_factory, COMPOSE, RABBITMQ)
