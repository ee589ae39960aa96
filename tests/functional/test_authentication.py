"""Token verification: the attack matrix, asymmetric keys, JWKS rotation, start-up checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask
from flask_jwt_extended import get_jwt_header, verify_jwt_in_request

from integration.app import get_settings
from integration.ops.cli import main as cli
from integration.security.tokens import issue_token
from integration.security.verification import token_verification
from integration.settings import ConfigurationError, Settings
from tests.conftest import TEST_SECRET, configured


def private_pem(key: Any) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def public_pem(key: Any) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def hmac_forgery(payload: dict[str, Any], key: bytes) -> str:
    """An HS256 token keyed with ``key`` (PyJWT refuses to build this one, as it should)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(payload).encode())
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "svc", "roles": ["reader"], "iat": now, "nbf": now, "exp": now + 300,
            "jti": f"j{now}{id(overrides)}", "type": "access"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def status_with(app: Flask, token: str) -> int:
    response = app.test_client().get("/api/v1/messages",
                                     headers={"Authorization": f"Bearer {token}"})
    if response.status_code != 200:
        assert response.mimetype == "application/problem+json"
    return response.status_code


@pytest.mark.parametrize("make_token", [
    lambda: jwt.encode(claims(exp=int(time.time()) - 3600), TEST_SECRET),
    lambda: jwt.encode(claims(nbf=int(time.time()) + 3600), TEST_SECRET),
    lambda: jwt.encode(claims(exp=None), TEST_SECRET),
    lambda: jwt.encode(claims(type="refresh"), TEST_SECRET),
    lambda: jwt.encode(claims(roles="admin"), TEST_SECRET),
    lambda: jwt.encode(claims(), TEST_SECRET, algorithm="HS512"),
    lambda: jwt.encode(claims(), TEST_SECRET + "x"),
    lambda: jwt.encode(claims(), key=None, algorithm="none"),
], ids=["expired", "not-yet-valid", "no-exp", "refresh-token", "roles-not-a-list",
        "other-hmac-algorithm", "bad-signature", "alg-none"])
def test_invalid_hs256_tokens_are_401(app: Flask, make_token: Callable[[], str]) -> None:
    assert status_with(app, make_token()) == 401


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_a_time_claim_that_is_not_a_number_is_401_naming_it(app: Flask, claim: str) -> None:
    """A numeric string in exp, iat or nbf (which PyJWT reads as a number) is refused with
    a 401 that names the claim, so REST and WebSocket never disagree on a token's times."""
    now = int(time.time())
    values = {"exp": now + 300, "iat": now, "nbf": now}
    token = jwt.encode(claims(**{claim: str(values[claim])}), TEST_SECRET)
    response = app.test_client().get("/api/v1/messages",
                                     headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert f"{claim} must be a number" in response.get_json()["detail"]


def test_issuer_and_audience_are_verified_when_configured(make_app: Callable[..., Flask]) -> None:
    app = make_app(jwt_issuer="https://idp.example", jwt_audience="integration")
    good = jwt.encode(claims(iss="https://idp.example", aud="integration"), TEST_SECRET)
    assert status_with(app, good) == 200
    for bad in (claims(iss="https://evil.example", aud="integration"),
                claims(iss="https://idp.example", aud="someone-else"),
                claims(aud="integration")):
        assert status_with(app, jwt.encode(bad, TEST_SECRET)) == 401


def test_rs256_with_a_public_key(make_app: Callable[..., Flask], rsa_key: Any) -> None:
    """A public key verifies RS256; an HS256 token signed with that public key is refused."""
    public = public_pem(rsa_key)
    app = make_app(jwt_secret=None, jwt_algorithm="RS256", jwt_public_key=public)
    assert status_with(app, jwt.encode(claims(), private_pem(rsa_key), algorithm="RS256")) == 200
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert status_with(app, jwt.encode(claims(), private_pem(other), algorithm="RS256")) == 401
    # The classic key-confusion attack: HMAC keyed with the (public) RSA key.
    forged = hmac_forgery(claims(), public.encode())
    assert status_with(app, forged) == 401
    assert status_with(app, jwt.encode(claims(), TEST_SECRET)) == 401


class JWKSServer:
    """A loopback JWKS endpoint whose key set the test can rotate."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"

    def add(self, key: Any, kid: str, algorithm: type) -> None:
        jwk = json.loads(algorithm.to_jwk(key.public_key()))
        self.keys.append({**jwk, "kid": kid, "use": "sig"})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks() -> Iterator[JWKSServer]:
    server = JWKSServer()
    yield server
    server.close()


def test_jwks_keys_are_cached_and_rotation_needs_no_restart(
    make_app: Callable[..., Flask], jwks: JWKSServer
) -> None:
    """ES256 tokens from an identity provider: known keys are cached, a new kid is fetched."""
    first = ec.generate_private_key(ec.SECP256R1())
    jwks.add(first, "k1", jwt.algorithms.ECAlgorithm)
    app = make_app(jwt_secret=None, jwt_algorithm="ES256", jwt_jwks_url=jwks.url,
                   jwt_jwks_refresh_cooldown_seconds=0)
    sign = lambda key, kid: jwt.encode(claims(), private_pem(key), algorithm="ES256",  # noqa: E731
                                       headers={"kid": kid})
    assert status_with(app, sign(first, "k1")) == 200
    assert status_with(app, sign(first, "k1")) == 200
    assert jwks.fetches == 1

    second = ec.generate_private_key(ec.SECP256R1())
    jwks.add(second, "k2", jwt.algorithms.ECAlgorithm)
    assert status_with(app, sign(second, "k2")) == 200
    assert status_with(app, sign(second, "unknown-kid")) == 401
    assert status_with(app, jwt.encode(claims(), TEST_SECRET)) == 401


@pytest.mark.parametrize("overrides, message", [
    ({"jwt_secret": None}, "INTEGRATION_JWT_SECRET is not set"),
    ({"jwt_secret": "short"}, "too weak"),
    ({"jwt_secret": "replace-with-a-random-secret-of-at-least-32-bytes"}, "too weak"),
    ({"jwt_public_key": "x"}, "one algorithm family"),
    ({"jwt_algorithm": "RS256"}, "one algorithm family"),
    ({"jwt_algorithm": "RS256", "jwt_secret": None}, "exactly one of"),
])
def test_production_refuses_unsafe_token_settings(settings: Settings,
                                                  overrides: dict[str, Any],
                                                  message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        token_verification(configured(settings, env="production", **overrides))


def test_development_accepts_a_short_secret(settings: Settings) -> None:
    verification = token_verification(configured(settings, env="development",
                                                 jwt_secret="short"))
    assert verification.hmac


def test_cli_caps_token_lifetime_unless_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ordinary tokens live at most a day; service tokens up to the service maximum."""
    monkeypatch.setenv("INTEGRATION_TOKEN_MAX_TTL_SECONDS", "3600")
    get_settings.cache_clear()
    try:
        refused = CliRunner().invoke(cli, ["token", "issue", "--sub", "am", "--ttl", "7200"])
        service = CliRunner().invoke(cli, ["token", "issue", "--sub", "am", "--role",
                                           "monitoring", "--ttl", "2592000", "--service"])
    finally:
        get_settings.cache_clear()
    assert refused.exit_code != 0 and "--service" in refused.output
    assert service.exit_code == 0, service.output
    decoded = jwt.decode(service.output.strip(), TEST_SECRET, algorithms=["HS256"])
    assert decoded["token_use"] == "service"
    assert decoded["exp"] - decoded["iat"] == 2592000


def test_tokens_issued_by_the_cli_pass_the_gateway(app: Flask) -> None:
    assert status_with(app, issue_token(TEST_SECRET, "x", ["reader"])) == 200


def test_a_verified_token_is_remembered_until_it_expires(
        make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same token is verified once, not per request; it still stops working at its
    ``exp``, and any other text (a changed signature) is verified on its own."""
    verified: list[bytes] = []
    original = jwt.api_jws.PyJWS._verify_signature

    def counting(self: Any, signing_input: bytes, *args: Any, **kwargs: Any) -> Any:
        verified.append(signing_input)
        return original(self, signing_input, *args, **kwargs)

    monkeypatch.setattr(jwt.api_jws.PyJWS, "_verify_signature", counting)
    app = make_app(jwt_leeway_seconds=0)
    token = jwt.encode(claims(exp=int(time.time()) + 2), TEST_SECRET)
    assert [status_with(app, token) for _ in range(3)] == [200, 200, 200]
    assert len(verified) == 1
    head, body, signature = token.split(".")
    forged = f"{head}.{body}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    assert status_with(app, forged) == 401
    assert len(verified) > 1  # checked (and refused), not taken from the cache
    time.sleep(max(0.0, jwt.decode(token, TEST_SECRET, algorithms=["HS256"])["exp"]
                   - time.time()) + 1.1)
    assert status_with(app, token) == 401


def test_verification_cache_can_be_turned_off(make_app: Callable[..., Flask],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = jwt.api_jws.PyJWS._verify_signature
    monkeypatch.setattr(jwt.api_jws.PyJWS, "_verify_signature",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    app = make_app(jwt_verified_cache_seconds=0)
    token = jwt.encode(claims(), TEST_SECRET)
    assert [status_with(app, token) for _ in range(2)] == [200, 200]
    assert len(calls) == 2


def test_a_verified_tokens_header_is_read_once(make_app: Callable[..., Flask],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """flask-jwt-extended reads the header of every request's token; the gateway remembers
    it with the claims, and each token still gets its own header."""
    reads: list[str] = []
    original = jwt.get_unverified_header
    monkeypatch.setattr(jwt, "get_unverified_header",
                        lambda token: reads.append(token) or original(token))
    app = make_app()
    first = jwt.encode(claims(), TEST_SECRET, headers={"kid": "first"})
    second = jwt.encode(claims(), TEST_SECRET, headers={"kid": "second"})
    seen = []

    @app.get("/header-of-test")
    def header_of_test() -> dict[str, Any]:
        verify_jwt_in_request()
        seen.append(get_jwt_header()["kid"])
        return {}

    client = app.test_client()
    reads_after = []
    for token in (first, first, second, first, second):
        answer = client.get("/header-of-test", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200
        reads_after.append(len(reads))
    assert seen == ["first", "first", "second", "first", "second"]
    # Read when each token is first verified; never again while it is remembered.
    assert reads_after[0] == reads_after[1] > 0
    assert reads_after[2] == reads_after[3] == reads_after[4] == 2 * reads_after[0]

    uncached = make_app(jwt_verified_cache_seconds=0)
    reads.clear()
    assert status_with(uncached, first) == 200
    once = len(reads)
    assert status_with(uncached, first) == 200
    assert len(reads) == 2 * once
