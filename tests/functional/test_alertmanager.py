"""Alertmanager's webhook notifications: one alert message per alert, repeats deduplicated;
the bus's own health alerts go to people, never into the bus."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from flask import Flask
from flask.testing import FlaskClient

from integration.loop.alertmanager import RecentAlerts
from integration.messages.envelope import new_id
from integration.ops.embedded_redis import free_port
from integration.security.tokens import issue_token
from tests.conftest import ROOT, TEST_SECRET, bearer, wait_for, wait_status

URL = "/api/v1/alertmanager"
EXTERNAL_URL = "http://alertmanager.example.org:9093"
SAMPLE_CONFIG = ROOT / "deploy" / "alertmanager.yml"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
AMTOOL = shutil.which("amtool")



def alert(instance: str, status: str = "firing", severity: str = "critical",
          fingerprint: str | None = None) -> dict[str, Any]:
    """One alert exactly as Alertmanager's webhook (format version 4) carries it."""
    return {
        "status": status,
        "labels": {"alertname": "HighLatency", "instance": instance, "job": "api",
                   "severity": severity},
        "annotations": {"summary": f"p99 latency above 2s on {instance}",
                        "runbook_url": "https://runbooks.example.org/high-latency"},
        "startsAt": "2026-01-31T12:00:00.123456789Z",
        "endsAt": "2026-01-31T12:20:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example.org:9090/graph?g0.expr=latency_p99+%3E+2"
                        "\u0026g0.tab=1",
        "fingerprint": fingerprint or new_id()[:16],
    }


def notification(*alerts: dict[str, Any]) -> dict[str, Any]:
    """A webhook notification of one group, as Alertmanager posts it."""
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "receiver": "integration-bus",
        "status": "firing" if firing else "resolved",
        "alerts": list(alerts),
        "groupLabels": {"alertname": "HighLatency"},
        "commonLabels": {"alertname": "HighLatency", "job": "api"},
        "commonAnnotations": {"runbook_url": "https://runbooks.example.org/high-latency"},
        "externalURL": EXTERNAL_URL,
        "version": "4",
        "groupKey": '{}:{alertname="HighLatency"}',
        "truncatedAlerts": 0,
    }


def send(client: FlaskClient, headers: dict[str, str], body: Any) -> Any:
    return client.post(URL, data=json.dumps(body), headers=headers,
                       content_type="application/json")


@pytest.fixture
def recorded(redis_client: redis.Redis) -> Callable[[], int]:
    """How many alert messages were ever recorded (every enqueued message is recorded first;
    the loop's own messages are of other types)."""
    return lambda: int(redis_client.zcard("integration:idx:type:alert"))


def test_each_alert_of_a_group_becomes_one_processed_alert_message(
    client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    """Three alerts in one notification are three alert messages, each processed to succeeded."""
    alerts = [alert("api-1"), alert("api-2", severity="warning"), alert("api-3", severity="P2")]
    response = send(client, {**auth, "X-Correlation-ID": "am-chain-1"}, notification(*alerts))
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (3, 0, 0)
    assert [r["index"] for r in body["results"]] == [0, 1, 2]
    assert [r["fingerprint"] for r in body["results"]] == [a["fingerprint"] for a in alerts]

    for item, sent, severity in zip(body["results"], alerts, ["critical", "warning", "warning"],
                                    strict=True):
        assert item["status"] == 202 and item["status_url"] == f"/api/v1/messages/{item['id']}"
        record = wait_status(client, auth, item["id"])
        assert record["status"] == "succeeded", record.get("error")
        assert record["type"] == "alert" and record["channel"] == "alertmanager"
        assert record["owner"] == "tester"
        envelope = record["envelope"]
        assert envelope["source"] == f"{EXTERNAL_URL}/#/alerts?receiver=integration-bus"
        assert envelope["subject"] == sent["fingerprint"]
        assert envelope["correlationid"] == "am-chain-1"
        assert envelope["data"] == {
            "name": "HighLatency", "status": "firing", "severity": severity,
            "labels": sent["labels"], "annotations": sent["annotations"],
            "fingerprint": sent["fingerprint"], "starts_at": "2026-01-31T12:00:00.123456Z"}
        assert record["result"]["fingerprint"] == sent["fingerprint"]
        assert record["result"]["needs_diagnosis"] is True


def test_a_repeated_group_is_duplicate_and_a_resolved_alert_is_new(
    client: FlaskClient, auth: dict[str, str], worker: Any, recorded: Callable[[], int]
) -> None:
    """A repeat inside the window starts nothing; resolving, then firing again, are new."""
    first, second = alert("api-1"), alert("api-2")
    ids = [r["id"] for r in send(client, auth, notification(first, second)).get_json()["results"]]

    before = recorded()
    repeat = send(client, auth, notification(first, second))  # repeat_interval
    assert repeat.status_code == 202
    body = repeat.get_json()
    assert (body["accepted"], body["duplicates"]) == (0, 2)
    assert [(r["status"], r["duplicate"], r["id"]) for r in body["results"]] == \
        [(200, True, ids[0]), (200, True, ids[1])]
    assert recorded() == before

    # The group changes: api-1 resolves, api-2 is still firing.
    resolved = {**first, "status": "resolved", "endsAt": "2026-01-31T12:20:00Z"}
    body = send(client, auth, notification(resolved, second)).get_json()
    assert [r["duplicate"] for r in body["results"]] == [False, True]
    record = wait_status(client, auth, body["results"][0]["id"])
    assert record["status"] == "succeeded"
    assert record["envelope"]["data"]["status"] == "resolved"
    assert record["result"]["needs_diagnosis"] is False
    assert recorded() == before + 1

    # api-1 fires again inside the window: a new occurrence, not a repeat of the first.
    body = send(client, auth, notification(first, second)).get_json()
    assert [r["duplicate"] for r in body["results"]] == [False, True]
    assert body["results"][0]["id"] not in ids


def test_a_repeat_after_the_window_is_a_new_message(
    make_app: Callable[..., Flask], auth: dict[str, str], redis_client: redis.Redis
) -> None:
    """Once INTEGRATION_ALERTMANAGER_DEDUP_SECONDS have passed, the same alert starts anew."""
    client = make_app(alertmanager_dedup_seconds=1).test_client()
    sent = alert("api-9")
    first = send(client, auth, notification(sent)).get_json()["results"][0]
    assert send(client, auth, notification(sent)).get_json()["results"][0]["duplicate"]
    key = RecentAlerts(redis_client, "integration", 1).key("tester", sent["fingerprint"],
                                                           "firing")
    wait_for(lambda: not redis_client.exists(key), timeout=5, message="the window to pass")
    again = send(client, auth, notification(sent)).get_json()["results"][0]
    assert again["status"] == 202 and again["id"] != first["id"]


def test_deduplication_is_per_token_subject(client: FlaskClient, auth: dict[str, str]) -> None:
    """Another subject's Alertmanager sending the same alert gets its own message."""
    sent = alert("api-4")
    mine = send(client, auth, notification(sent)).get_json()["results"][0]
    theirs = send(client, bearer("other-am", "monitoring"),
                  notification(sent)).get_json()["results"][0]
    assert theirs["status"] == 202 and theirs["id"] != mine["id"]


def test_alerts_that_could_not_be_enqueued_are_503_and_not_remembered(
    make_app: Callable[..., Flask], client: FlaskClient, auth: dict[str, str]
) -> None:
    """With the broker down the answer is 503, so Alertmanager's retry is processed, not dropped."""
    down = make_app(broker_url=f"redis://127.0.0.1:{free_port()}/0").test_client()
    sent = notification(alert("api-5"))
    response = send(down, auth, sent)
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"]
    assert [r["status"] for r in response.get_json()["results"]] == [503]
    retried = send(client, auth, sent).get_json()
    assert (retried["accepted"], retried["duplicates"]) == (1, 0)


def test_a_token_without_submit_alert_is_403(client: FlaskClient,
                                             recorded: Callable[[], int]) -> None:
    """A role that may not submit alerts is refused whole, naming the permission."""
    before = recorded()
    response = send(client, bearer("planner-svc", "planner"), notification(alert("api-6")))
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["permission"] == "submit:alert"
    assert recorded() == before


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"}])
def test_without_a_valid_token_it_is_401(client: FlaskClient, headers: dict[str, str]) -> None:
    """Alertmanager must send its service token; without a valid one nothing is read."""
    response = send(client, headers, notification(alert("api-7")))
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("change, location", [
    (lambda n: {**n, "version": "3"}, ["version"]),
    (lambda n: {k: v for k, v in n.items() if k != "alerts"}, ["alerts"]),
    (lambda n: {**n, "alerts": []}, ["alerts"]),
    (lambda n: {**n, "alerts": [{**n["alerts"][0], "status": "pending"}]},
     ["alerts", 0, "status"]),
    (lambda n: {**n, "alerts": [{**n["alerts"][0], "startsAt": 1718000000}]},
     ["alerts", 0, "startsAt"]),
    (lambda n: {**n, "alerts": [{**n["alerts"][0], "labels": {"alertname": 7}}]},
     ["alerts", 0, "labels", "alertname"]),
])
def test_a_malformed_notification_is_422(client: FlaskClient, auth: dict[str, str],
                                         recorded: Callable[[], int],
                                         change: Callable[[dict[str, Any]], Any],
                                         location: list[Any]) -> None:
    """A body that is not a version-4 notification is a 422 locating the error; nothing is sent."""
    before = recorded()
    response = send(client, auth, change(notification(alert("api-8"))))
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert location in [e["loc"] for e in response.get_json()["errors"]]
    assert recorded() == before


def test_an_alert_without_a_name_is_refused_alone(client: FlaskClient,
                                                  auth: dict[str, str]) -> None:
    """An alert lacking the alertname label is a 422 item; the rest of the group goes on."""
    nameless = alert("api-10")
    nameless["labels"] = {"instance": "api-10"}
    body = send(client, auth, notification(alert("api-11"), nameless)).get_json()
    assert [r["status"] for r in body["results"]] == [202, 422]
    assert body["results"][1]["problem"]["errors"][0]["loc"] == ["alerts", 1, "data", "name"]


def test_alerts_are_counted_on_the_alertmanager_channel(client: FlaskClient,
                                                        auth: dict[str, str]) -> None:
    """integration_messages_received_total counts accepted and duplicate alerts by channel."""
    def count(outcome: str) -> float:
        text = client.get("/metrics").get_data(as_text=True)
        found = re.search(r'^integration_messages_received_total\{channel="alertmanager",'
                          rf'outcome="{outcome}",type="alert"\}} (\S+)$', text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    sent = notification(alert("api-12"), alert("api-13"))
    send(client, auth, sent)
    send(client, auth, sent)
    assert (count("accepted"), count("duplicate")) == (2, 2)


def receiver(config: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [r for r in config["receivers"] if r["name"] == name]
    return found


@pytest.mark.skipif(AMTOOL is None, reason="amtool is not installed (prometheus-alertmanager)")
def test_the_sample_configuration_is_valid_and_points_at_the_adapter() -> None:
    """deploy/alertmanager.yml passes amtool and sends resolved alerts to /api/v1/alertmanager;
    the bus's own health alerts go to the operators, whose receiver is not the bus."""
    assert AMTOOL is not None
    result = subprocess.run([AMTOOL, "check-config", str(SAMPLE_CONFIG)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(SAMPLE_CONFIG.read_text())
    [webhook] = receiver(config, "integration-bus")["webhook_configs"]
    assert webhook["url"].endswith(URL)
    assert webhook["send_resolved"] is True
    assert webhook["http_config"]["authorization"]["credentials_file"]
    assert URL not in json.dumps(receiver(config, "operators"))

    def routed(*labels: str) -> str:
        found = subprocess.run([AMTOOL, "config", "routes", "test",
                                f"--config.file={SAMPLE_CONFIG}", *labels],
                               capture_output=True, text=True, timeout=30)
        assert found.returncode == 0, found.stdout + found.stderr
        return found.stdout.strip()

    assert routed("alertname=DiskFull", "severity=critical") == "integration-bus"
    assert routed("alertname=IntegrationWorkerDown", "component=integration-bus",
                  "severity=critical") == "operators"


class Operators(ThreadingHTTPServer):
    """Stands in for the people's channel: records each webhook notification it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.received.append((self.headers.get("Authorization", ""), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return None

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/page"


@pytest.fixture
def operators() -> Iterator[Operators]:
    server = Operators()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


OPERATORS_TOKEN = "operators-token-for-the-test"


@pytest.fixture
def alertmanager(served_gateway: str, operators: Operators, tmp_path: Path) -> Iterator[str]:
    """A real Alertmanager running the sample configuration, its receivers pointed at the
    served gateway and at the stand-in for the operators, with their secret files."""
    if ALERTMANAGER is None:
        pytest.skip("Alertmanager is not installed (apt-get install prometheus-alertmanager)")
    token_file = tmp_path / "integration-token"
    token_file.write_text(issue_token(TEST_SECRET, "alertmanager", ["monitoring"], 600))
    operators_token = tmp_path / "operators-token"
    operators_token.write_text(OPERATORS_TOKEN)
    config = yaml.safe_load(SAMPLE_CONFIG.read_text())
    for route in (config["route"], *config["route"]["routes"]):
        route.update(group_wait="0s", group_interval="1s")
    webhook = receiver(config, "integration-bus")["webhook_configs"][0]
    webhook["url"] = served_gateway + URL
    webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    paging = receiver(config, "operators")["webhook_configs"][0]
    paging["url"] = operators.url
    paging["http_config"]["authorization"]["credentials_file"] = str(operators_token)
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={tmp_path / 'alertmanager.yml'}",
         f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         f"--web.external-url=http://127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:  # noqa: S310
                return response.status == 200
        except OSError:
            return False

    wait_for(ready, timeout=20, message="Alertmanager ready")
    yield url
    process.terminate()
    process.wait(timeout=10)
    log.close()


def post_alerts(alertmanager: str, alerts: list[dict[str, Any]]) -> None:
    """Raise alerts the way Prometheus does: Alertmanager's v2 API."""
    request = urllib.request.Request(f"{alertmanager}/api/v2/alerts", method="POST",
                                     data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
        assert response.status == 200


def test_a_real_alertmanager_delivers_firing_then_resolved_alerts(
    alertmanager: str, operators: Operators, client: FlaskClient, auth: dict[str, str],
    worker: Any
) -> None:
    """Alertmanager with the sample configuration delivers each alert once while firing and
    once resolved, and the worker processes both; the operators are not paged for it."""
    instance = f"real-{new_id()[:8]}"
    labels = {"alertname": "DiskFull", "instance": instance, "severity": "critical"}
    started = datetime.now(UTC) - timedelta(minutes=1)
    post_alerts(alertmanager, [{"labels": labels, "annotations": {"summary": "disk full"},
                                "startsAt": started.isoformat()}])

    def received(status: str) -> list[dict[str, Any]]:
        page = client.get("/api/v1/messages", headers=auth,
                          query_string={"type": "alert", "limit": 200}).get_json()
        records = [client.get(f"/api/v1/messages/{item['id']}", headers=auth).get_json()
                   for item in page["items"] if item.get("channel") == "alertmanager"]
        return [r for r in records if r["envelope"]["data"]["labels"].get("instance") == instance
                and r["envelope"]["data"]["status"] == status]

    [firing] = wait_for(lambda: received("firing"), timeout=30, message="the firing alert")
    assert firing["owner"] == "alertmanager"
    assert firing["envelope"]["source"].startswith(f"{alertmanager}/#/alerts?receiver=")
    assert wait_status(client, auth, firing["id"])["status"] == "succeeded"

    post_alerts(alertmanager, [{"labels": labels, "annotations": {"summary": "disk full"},
                                "startsAt": started.isoformat(),
                                "endsAt": datetime.now(UTC).isoformat()}])
    [resolved] = wait_for(lambda: received("resolved"), timeout=30, message="the resolution")
    assert resolved["envelope"]["data"]["fingerprint"] == firing["envelope"]["data"]["fingerprint"]
    assert wait_status(client, auth, resolved["id"])["status"] == "succeeded"
    assert len(received("firing")) == 1
    assert operators.received == []


def test_the_bus_health_alerts_page_the_operators_and_never_enter_the_bus(
    alertmanager: str, operators: Operators, recorded: Callable[[], int]
) -> None:
    """An alert labelled component="integration-bus" reaches the operators' receiver with its
    token, firing then resolved, and never becomes a message of the bus."""
    before = recorded()
    instance = f"bus-{new_id()[:8]}"
    labels = {"alertname": "IntegrationWorkerDown", "component": "integration-bus",
              "instance": instance, "severity": "critical"}
    started = datetime.now(UTC) - timedelta(minutes=1)
    post_alerts(alertmanager, [{"labels": labels, "startsAt": started.isoformat()}])

    def paged(status: str) -> list[dict[str, Any]]:
        return [a for _, body in operators.received for a in body["alerts"]
                if a["labels"].get("instance") == instance and a["status"] == status]

    wait_for(lambda: paged("firing"), timeout=30, message="the operators paged")
    post_alerts(alertmanager, [{"labels": labels, "startsAt": started.isoformat(),
                                "endsAt": datetime.now(UTC).isoformat()}])
    wait_for(lambda: paged("resolved"), timeout=30, message="the operators told it resolved")
    assert {token for token, _ in operators.received} == {f"Bearer {OPERATORS_TOKEN}"}
    assert {body["receiver"] for _, body in operators.received} == {"operators"}
    assert recorded() == before, "nothing of it entered the bus"


def test_openapi_documents_the_endpoint(client: FlaskClient) -> None:
    """The OpenAPI document describes the webhook body and the per-alert answer."""
    document = client.get("/openapi.json").get_json()
    post = document["paths"][URL]["post"]
    assert {"202", "401", "403", "422", "503"} <= set(post["responses"])
    schemas = document["components"]["schemas"]
    assert "AlertmanagerWebhook" in schemas and "AlertmanagerResponse" in schemas
