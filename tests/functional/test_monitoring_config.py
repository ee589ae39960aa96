"""The shipped Prometheus configuration, alert rules and dashboard: valid, tested, and using
only metrics the service really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
import uuid
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from tests.conftest import ROOT, wait_status

DEPLOY = ROOT / "deploy"
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None,
                                reason="promtool is not installed (apt-get install prometheus)")
METRIC_NAME = re.compile(r"\b(integration_[a-z_]+)")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60,
                          cwd=DEPLOY)


def test_prometheus_config_and_rules_are_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_stays_quiet_when_it_should() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "alerts_test.yml").read_text()))
    defined = set(re.findall(r"alert: (\w+)", (DEPLOY / "alerts.yml").read_text()))
    assert defined == tested, "every alert has a unit test"


def _exported(text: str) -> set[str]:
    names = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    names |= set(re.findall(r"^([a-z_]+)[{ ]", text, re.MULTILINE))
    return names


def test_rules_and_dashboard_use_only_exported_metrics(
    client: FlaskClient, auth: dict[str, str], worker: Any, redis_client: redis.Redis
) -> None:
    from integration.worker.guards import GuardSettings, SharedBreaker

    SharedBreaker("test:dashboard", redis_client, "integration", GuardSettings())
    ids = [client.post("/api/v1/messages", headers=auth, json={
        "type": "test.flaky", "source": "dashboard",
        "data": {"key": uuid.uuid4().hex, "fail_times": fails, "kind": kind}}).get_json()["id"]
        for fails, kind in ((1, "transient"), (1, "permanent"))]
    for message_id in ids:
        wait_status(client, auth, message_id)
    exported = _exported(client.get("/metrics").get_data(as_text=True))
    url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
        exported |= _exported(response.read().decode())

    dashboard = json.loads((DEPLOY / "grafana" / "integration-dashboard.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = set(METRIC_NAME.findall((DEPLOY / "alerts.yml").read_text()))
    used |= {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    missing = {name for name in used if name not in exported and not any(
        name.endswith(s) and name.removesuffix(s) in exported for s in HISTOGRAM_SUFFIXES)}
    assert used and not missing, f"used but not exported: {sorted(missing)}"
