"""`promtool check metrics` finds nothing to report on either endpoint."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from typing import Any

import pytest
from flask.testing import FlaskClient

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)


@needs_promtool
def test_gateway_metrics_pass_promtool(client: FlaskClient, auth: dict[str, str]) -> None:
    client.post("/api/v1/messages", headers=auth,
                json={"type": "event", "source": "promtool", "data": {}})
    client.get("/api/v1/types", headers=auth)
    result = promtool_check(client.get("/metrics").get_data(as_text=True))
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
        result.stdout + result.stderr


@needs_promtool
def test_worker_metrics_pass_promtool(client: FlaskClient, auth: dict[str, str],
                                      worker: Any) -> None:
    from tests.conftest import wait_status

    message_id = client.post("/api/v1/messages", headers=auth, json={
        "type": "event", "source": "promtool", "data": {}}).get_json()["id"]
    wait_status(client, auth, message_id)
    url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    result = promtool_check(text)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
        result.stdout + result.stderr
