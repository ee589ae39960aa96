"""Production refuses placeholder and low-entropy secrets at start, in every process, and
`integration check` reports the same; development warns."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from integration.security.secrets import entropy_bits
from integration.settings import ConfigurationError
from tests.conftest import ROOT

STRONG = secrets.token_urlsafe(48)
PLACEHOLDER_URL = "redis://gateway:replace-with-openssl-rand-hex-32@redis:6379/0"


@pytest.mark.parametrize("value", ["a" * 64, "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH",
                                   "passwordpasswordpasswordpassword"])
def test_long_secrets_with_little_entropy_score_low(value: str) -> None:
    """Length alone does not pass: repeats and runs score under 128 bits."""
    assert entropy_bits(value) < 128


def test_generated_secrets_score_high() -> None:
    """What the docs say to run (`openssl rand -base64 48`, `-hex 32`) always passes."""
    for value in (secrets.token_urlsafe(48), secrets.token_hex(32)):
        assert entropy_bits(value) > 200


@pytest.mark.parametrize("overrides, variable", [
    ({"jwt_secret": "a" * 64}, "INTEGRATION_JWT_SECRET"),
    ({"redis_url": PLACEHOLDER_URL}, "INTEGRATION_REDIS_URL"),
    ({"grafana_admin_password": "replace-with-openssl-rand-base64-48"},
     "GRAFANA_ADMIN_PASSWORD"),
])
def test_the_gateway_refuses_to_start_with_a_weak_secret(
        make_app: Callable[..., Flask], overrides: dict[str, Any], variable: str) -> None:
    """In production the gateway does not start; the message names the variable (never its
    value) and how to generate one."""
    with pytest.raises(ConfigurationError) as refused:
        make_app(env="production", **{"jwt_secret": STRONG, **overrides})
    message = str(refused.value)
    assert variable in message and "openssl rand" in message
    assert "replace-with" not in message and "a" * 64 not in message


def test_a_password_of_a_server_on_loopback_is_not_judged(
        make_app: Callable[..., Flask], redis_url: str) -> None:
    """A Redis or broker on this host's loopback (a local RabbitMQ's guest user, a
    benchmark's Redis) is reachable from this host only: its password is not refused."""
    assert make_app(env="production", jwt_secret=STRONG,
                    broker_url="amqp://guest:guest@127.0.0.1:5672//")


def test_workers_beat_and_flower_refuse_a_placeholder_in_production() -> None:
    """Their Celery configuration refuses a placeholder broker password before anything
    connects (workers, beat and Flower all load it)."""
    env = {**os.environ, "INTEGRATION_ENV": "production",
           "INTEGRATION_BROKER_URL": "amqp://integration:replace-with-openssl-rand-hex-32@"
                                     "rabbitmq:5672/integration"}
    result = subprocess.run([sys.executable, "-c", "import celeryconfig"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "the password in INTEGRATION_BROKER_URL is a placeholder" in result.stderr
    assert "openssl rand -hex 32" in result.stderr
