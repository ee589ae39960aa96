"""Outbound calls through a forwarding proxy (INTEGRATION_EGRESS_PROXY): what reaches it, what
is refused before it, and where its credentials never show."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from structlog.testing import capture_logs

from integration.app import default_registry
from integration.messages.retry import classify
from integration.messages.routing import DEFAULT_QUEUE
from integration.ops.embedded_redis import EmbeddedRedis
from integration.security.egress import Egress
from integration.security.egress_policy import (
    EgressPolicy,
    EgressRefused,
    EgressTLSError,
    EgressUnavailable,
)
from integration.security.egress_proxy import EgressProxy
from integration.settings import ConfigurationError
from tests.conftest import ROOT, WorkerProcess, delivery_of, wait_status
from tests.support.http_proxy import ForwardingProxy
from tests.support.http_target import TEMPLATE_PORT, RecordingServer
from tests.support.tls import self_signed

#: The proxy's password: a test fails wherever it shows up.
PASSWORD = "proxy-pass-never-shown"
CREDENTIALS = f"relay:{PASSWORD}"
LOCAL = EgressPolicy.from_allowlist("127.0.0.1/32")


@pytest.fixture
def proxy() -> Iterator[ForwardingProxy]:
    with ForwardingProxy(CREDENTIALS, hosts={"ops.test": "127.0.0.1"}) as running:
        yield running


def proxied(proxy: ForwardingProxy, policy: EgressPolicy = LOCAL, **options: Any) -> Egress:
    return Egress(policy, proxy=EgressProxy.from_url(proxy.url(CREDENTIALS)), **options)


def test_an_http_target_is_asked_in_absolute_form(proxy: ForwardingProxy) -> None:
    """The proxy gets the whole URL and the credentials; the target gets the request without
    them, and the log names the proxy without them."""
    with RecordingServer() as target, capture_logs() as logs:
        response = proxied(proxy).request("POST", target.url("/hook?x=1"), json_body={"a": 1},
                                          headers={"X-Api-Key": "k"}, timeout=5)
    assert response.status == 200
    [asked] = proxy.asked
    assert (asked.method, asked.target) == ("POST", target.url("/hook?x=1"))
    assert asked.authorization == proxy.expected
    [seen] = target.seen("/hook")
    assert seen.json() == {"a": 1} and seen.headers["X-Api-Key"] == "k"
    assert seen.headers["Host"] == f"127.0.0.1:{target.port}"
    assert not any(name.lower() == "proxy-authorization" for name in seen.headers)
    [line] = [entry for entry in logs if entry["event"] == "egress request"]
    assert line["proxy"] == f"http://127.0.0.1:{proxy.port}"
    assert PASSWORD not in repr(logs)


def test_an_https_target_is_tunnelled_and_verified_for_its_name(
    proxy: ForwardingProxy, tmp_path: Path
) -> None:
    """CONNECT host:port, then TLS with SNI and the certificate checked for the URL's name
    (which the proxy resolved); a certificate for another name is refused through the
    tunnel as without a proxy."""
    server_tls, client_tls = self_signed(tmp_path, "ops.test")
    policy = EgressPolicy.from_allowlist("127.0.0.1/32", resolver=lambda h, p: ["127.0.0.1"])
    egress = proxied(proxy, policy, tls_context=client_tls)
    with RecordingServer(tls=server_tls) as target:
        response = egress.request("GET", f"https://ops.test:{target.port}/tls", timeout=5)
        assert response.status == 200
        assert target.seen("/tls")[0].headers["Host"] == f"ops.test:{target.port}"
        proxy.hosts["other.test"] = "127.0.0.1"
        with pytest.raises(EgressTLSError, match="other.test"):
            egress.request("GET", f"https://other.test:{target.port}/tls", timeout=5)
    assert [(a.method, a.target) for a in proxy.asked] == [
        ("CONNECT", f"ops.test:{target.port}"), ("CONNECT", f"other.test:{target.port}")]


def test_an_internal_target_is_refused_without_asking_the_proxy(
    proxy: ForwardingProxy
) -> None:
    """The policy checks the target's own resolution first; the proxy, an allowed address
    itself, hears nothing of a refused target."""
    for url in ("http://127.0.0.1:9/x", "https://10.1.2.3/x", "http://169.254.169.254/"):
        with pytest.raises(EgressRefused):
            proxied(proxy, EgressPolicy()).request("GET", url, timeout=5)
    assert proxy.asked == []


def test_wrong_proxy_credentials_are_a_permanent_error_that_does_not_show_them(
    proxy: ForwardingProxy, tmp_path: Path
) -> None:
    """A 407 to CONNECT is permanent; neither the error nor the log repeats the password, nor
    does a setting the proxy cannot be built from."""
    wrong = Egress(LOCAL, proxy=EgressProxy.from_url(proxy.url(f"relay:{PASSWORD}-old")))
    with capture_logs() as logs, pytest.raises(EgressRefused, match="407") as refused:
        wrong.request("GET", "https://127.0.0.1:9/x", timeout=5)
    assert classify(refused.value) == "permanent"
    assert PASSWORD not in str(refused.value) + repr(logs) + repr(wrong.proxy)
    for bad in (f"https://{CREDENTIALS}@proxy:3128", f"http://{CREDENTIALS}@proxy:3128/path",
                f"http://{CREDENTIALS}@proxy:port"):
        with pytest.raises(ConfigurationError) as error:
            EgressProxy.from_url(bad)
        assert PASSWORD not in str(error.value)


def test_an_unreachable_proxy_or_target_is_a_transient_error(proxy: ForwardingProxy) -> None:
    """A proxy that does not answer, or cannot reach the target, may recover: retried."""
    with pytest.raises(EgressUnavailable, match="proxy") as unreachable:
        Egress(LOCAL, proxy=EgressProxy.from_url(f"http://{CREDENTIALS}@127.0.0.1:9")
               ).request("GET", "http://127.0.0.1:9/x", timeout=5)
    with pytest.raises(EgressUnavailable, match="502") as no_tunnel:
        proxied(proxy).request("GET", "https://127.0.0.1:9/x", timeout=5)
    assert {classify(unreachable.value), classify(no_tunnel.value)} == {"transient"}
    assert PASSWORD not in str(unreachable.value) + str(no_tunnel.value)


@pytest.fixture(scope="module")
def proxied_stack(tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[EmbeddedRedis, ForwardingProxy, RecordingServer, Path]]:
    """A Redis and a worker of the module's own whose egress goes through a proxy, and the
    server behind its declared targets."""
    directory = tmp_path_factory.mktemp("proxy")
    with RecordingServer() as target, ForwardingProxy(CREDENTIALS) as proxy, \
            EmbeddedRedis(directory / "redis", persistent=False) as server:
        rules = directory / "rules.yaml"
        rules.write_text((ROOT / "tests" / "support" / "targets.yaml").read_text()
                         .replace(f":{TEMPLATE_PORT}/", f":{target.port}/"))
        worker = WorkerProcess([*default_registry().queues(), DEFAULT_QUEUE],
                               directory / "worker.log", env={
                                   "INTEGRATION_REDIS_URL": server.url,
                                   "INTEGRATION_RULES_FILE": str(rules),
                                   "INTEGRATION_EGRESS_PROXY": proxy.url(CREDENTIALS)})
        try:
            yield server, proxy, target, worker.log_path
        finally:
            worker.stop()


def test_a_webhook_delivery_and_an_http_action_go_through_the_proxy(
    make_app: Any, auth: dict[str, str],
    proxied_stack: tuple[EmbeddedRedis, ForwardingProxy, RecordingServer, Path],
) -> None:
    """A worker with the setting sends both through the proxy; an action on a private
    address is refused before it; the password is in no answer and no log."""
    server, proxy, target, log_path = proxied_stack
    client: FlaskClient = make_app(redis_url=server.url).test_client()
    hook = client.post("/api/v1/subscriptions", headers=auth, json={
        "url": target.url("/hook"), "topics": ["test.produce.succeeded"]})
    assert hook.status_code == 201, hook.get_json()
    produced = client.post("/api/v1/messages", headers=auth, json={
        "type": "test.produce", "source": "proxy", "data": {"key": uuid.uuid4().hex}})
    delivery = delivery_of(client, auth, produced.get_json()["id"], "webhook")
    actions = {name: client.post("/api/v1/messages", headers=auth, json={
        "type": "action", "source": "proxy",
        "data": {"action": f"restart-{uuid.uuid4().hex[:8]}", "target": name,
                 "executor": "http", "parameters": {"replicas": 2}}}).get_json()["id"]
        for name in ("test-restart", "test-private")}
    records = {name: wait_status(client, auth, message_id)
               for name, message_id in {**actions, "webhook": delivery}.items()}
    assert records["webhook"]["status"] == "succeeded", records["webhook"].get("error")
    assert records["test-restart"]["status"] == "succeeded", records["test-restart"]
    assert records["test-private"]["status"] == "dead"
    assert "refused" in json.dumps(records["test-private"]["error"])
    asked = {(a.method, a.target.split("?")[0]) for a in proxy.asked}
    assert asked == {("POST", target.url("/hook")), ("PUT", target.url("/restart"))}
    assert all(a.authorization == proxy.expected for a in proxy.asked)
    assert len(target.seen("/hook")) == 1 and len(target.seen("/restart")) == 1
    assert PASSWORD not in json.dumps(records)
    assert PASSWORD not in log_path.read_text(errors="replace")
