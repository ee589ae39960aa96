"""The trace of a message: ordered timeline with durations, and the chain it caused."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner
from flask.testing import FlaskClient

from integration.ops.cli import main as cli
from tests.conftest import mine, wait_status


def test_a_chain_is_traced_from_the_metric_to_the_action_result(
    client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    """Messages that name their cause (causationid) appear under it, in one call."""
    chain = [("metric", {"name": "cpu", "value": 99.0}),
             ("alert", {"name": "HighCPU"}),
             ("diagnosis", {"alert": "HighCPU", "probable_cause": "leak", "confidence": 0.9}),
             ("action", {"action": "restart", "target": "web-9"}),
             ("action.result", {"action_id": "a", "status": "succeeded"})]
    ids: list[str] = []
    for message_type, data in chain:
        body: dict[str, Any] = {"type": message_type, "source": "trace", "data": data,
                                "correlationid": "incident-7"}
        if ids:
            body["causationid"] = ids[-1]
        ids.append(client.post("/api/v1/messages", json=body, headers=auth).get_json()["id"])
    for message_id in ids:
        assert wait_status(client, auth, message_id)["status"] == "succeeded"

    found = client.get(f"/api/v1/messages/{ids[0]}/trace", headers=auth).get_json()
    node, depth = found, 0
    while True:
        assert node["id"] == ids[depth] and node["correlationid"] == mine("incident-7")
        steps = [s["status"] for s in node["timeline"]]
        assert steps == ["accepted", "queued", "processing", "succeeded", "published"]
        assert all(s["since_previous_ms"] >= 0 for s in node["timeline"])
        following = [c for c in node["caused"]
                     if depth + 1 < len(ids) and c["id"] == ids[depth + 1]]
        if not following:
            break
        node, depth = following[0], depth + 1
    assert depth == len(chain) - 1, "the whole loop in one trace"

    printed = CliRunner().invoke(cli, ["trace", ids[0]])
    assert printed.exit_code == 0, printed.output
    assert all(message_id in printed.output for message_id in ids)
    assert client.get("/api/v1/messages/nope/trace", headers=auth).status_code == 404
