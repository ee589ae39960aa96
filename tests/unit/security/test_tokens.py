"""Tokens issued by the CLI are the ones the gateway verifies."""

from __future__ import annotations

import jwt
import pytest
from click.testing import CliRunner

from integration.app import get_settings
from integration.ops.cli import main
from integration.security.tokens import read_token


def test_cli_issues_a_token_with_roles_and_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s" * 40
    monkeypatch.setenv("INTEGRATION_JWT_SECRET", secret)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["token", "issue", "--sub", "alertmanager",
                                           "--role", "monitoring", "--role", "reader",
                                           "--ttl", "120"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    claims = read_token(secret, result.output.strip())
    assert claims["sub"] == "alertmanager"
    assert claims["roles"] == ["monitoring", "reader"]
    assert claims["exp"] - claims["iat"] == 120
    with pytest.raises(jwt.InvalidSignatureError):
        read_token("t" * 40, result.output.strip())


def test_cli_refuses_without_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTEGRATION_JWT_SECRET", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["token", "issue", "--sub", "x"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code != 0
    assert "INTEGRATION_JWT_SECRET" in result.output
