"""CloudEvents 1.0 over HTTP, as the official Python SDK sends them: structured, batched, binary."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import redis
from cloudevents.core.bindings.http import HTTPMessage, to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent
from flask.testing import FlaskClient

from integration.messages.envelope import new_id
from tests.conftest import mine, submitted_records, wait_status

URL = "/api/v1/messages"
ALERT = {"name": "DiskFull", "severity": "critical", "labels": {"host": "db-1"}}
BATCH_TYPE = "application/cloudevents-batch+json"


def event(kind: str = "alert", data: Any = None, **attributes: Any) -> CloudEvent:
    """An SDK event with a URL-safe id (message ids travel in URLs)."""
    return CloudEvent(attributes={"type": kind, "source": "/monitoring/db-1", "id": new_id(),
                                  **attributes},
                      data=ALERT if data is None else data)


def post(client: FlaskClient, auth: dict[str, str], message: HTTPMessage,
         **headers: str) -> Any:
    """Send exactly the headers and body the SDK produced, with the bearer token."""
    return client.post(URL, data=message.body, headers={**message.headers, **auth, **headers})


def batch_of(*events: CloudEvent) -> HTTPMessage:
    """Batched mode: the SDK has no batch helper, so a JSON array of its structured events."""
    items = [json.loads(to_structured_event(e).body) for e in events]
    return HTTPMessage(headers={"content-type": BATCH_TYPE}, body=json.dumps(items).encode())


@pytest.fixture
def recorded(redis_client: redis.Redis) -> Callable[[], int]:
    return submitted_records(redis_client)


def assert_processed_as(client: FlaskClient, auth: dict[str, str], message_id: str,
                        sent: CloudEvent) -> dict[str, Any]:
    record = wait_status(client, auth, message_id)
    assert record["status"] == "succeeded", record.get("error")
    assert record["channel"] == "cloudevents"
    envelope = record["envelope"]
    attributes = sent.get_attributes()
    for name in ("type", "source", "subject"):
        if name in attributes:
            assert envelope[name] == attributes[name], name
    # Ids an event gives are in its sender's namespace (integration.ownership).
    for name in ("id", "correlationid", "causationid"):
        if name in attributes:
            assert envelope[name] == mine(attributes[name]), name
    assert envelope["data"] == sent.get_data()
    return record


def test_structured_mode_event_is_processed_with_its_attributes(
    client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    """A structured-mode event keeps its id, source, subject and correlation through the worker."""
    sent = event(subject="db-1/disk", correlationid="incident-7", causationid="metric-9")
    response = post(client, auth, to_structured_event(sent))
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["id"] == mine(sent.get_id())
    assert response.headers["Location"] == body["status_url"]
    record = assert_processed_as(client, auth, body["id"], sent)
    assert record["result"]["severity"] == "critical"


def test_binary_mode_event_is_processed_with_its_attributes(
    client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    """A binary-mode event's ce-* headers become its attributes and the body its data."""
    sent = event(subject="db-1/disk", correlationid="incident-8")
    message = to_binary_event(sent)
    assert "ce-id" in message.headers  # really binary mode
    response = post(client, auth, message)
    assert response.status_code == 202, response.get_json()
    record = assert_processed_as(client, auth, response.get_json()["id"], sent)
    assert record["envelope"]["datacontenttype"] == "application/json"
    assert record["envelope"]["time"].startswith(sent.get_time().strftime("%Y-%m-%dT%H:%M:%S"))


def test_binary_mode_with_json_content_type_is_processed(
    client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    """An event whose datacontenttype is application/json sends it as the Content-Type."""
    sent = event("metric", {"name": "disk_used", "value": 97.0}, datacontenttype="application/json")
    message = to_binary_event(sent)
    assert message.headers["content-type"] == "application/json"
    response = post(client, auth, message)
    assert response.status_code == 202, response.get_json()
    assert_processed_as(client, auth, response.get_json()["id"], sent)


def test_without_correlation_the_request_header_gives_it(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    """Like a plain message, an event without correlationid joins the request's X-Correlation-ID."""
    sent = event()
    response = post(client, auth, to_binary_event(sent), **{"X-Correlation-ID": "chain-ce-1"})
    record = client.get(f"{URL}/{response.get_json()['id']}", headers=auth).get_json()
    assert record["envelope"]["correlationid"] == mine("chain-ce-1")


def test_batched_mode_reports_each_event_in_order(
    client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    """A batch of SDK events gets one result per event; the invalid one carries its problem."""
    good = [event(subject=f"db-{i}") for i in range(2)]
    unknown = event("no.such.type")
    response = post(client, auth, batch_of(good[0], unknown, good[1]))
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert [r["status"] for r in body["results"]] == [202, 422, 202]
    assert body["results"][1]["problem"]["errors"][0]["loc"] == [1, "type"]
    for item, sent in zip((body["results"][0], body["results"][2]), good, strict=True):
        assert item["id"] == mine(sent.get_id())
        assert_processed_as(client, auth, item["id"], sent)


def test_plain_json_stays_on_the_rest_channel(client: FlaskClient,
                                              auth: dict[str, str]) -> None:
    """application/json is the REST channel even when the envelope is a CloudEvent."""
    body = json.loads(to_structured_event(event()).body)
    response = client.post(URL, json=body, headers=auth)
    record = client.get(f"{URL}/{response.get_json()['id']}", headers=auth).get_json()
    assert record["channel"] == "rest"


def test_binary_mode_with_non_json_data_is_415(client: FlaskClient, auth: dict[str, str],
                                               recorded: Callable[[], int]) -> None:
    """Binary mode accepts JSON data only; text or XML is an unsupported media type."""
    before = recorded()
    for media, data in (("text/plain", "disk full"), ("application/xml", b"<disk/>")):
        response = post(client, auth, to_binary_event(event(data=data, datacontenttype=media)))
        assert response.status_code == 415
        assert response.mimetype == "application/problem+json"
        assert "application/json" in response.get_json()["detail"]
    assert recorded() == before


def test_structured_mode_with_non_json_data_is_415(client: FlaskClient,
                                                   auth: dict[str, str]) -> None:
    """A structured event whose datacontenttype is not JSON is refused the same way."""
    sent = event(data="disk full", datacontenttype="text/plain")
    response = post(client, auth, to_structured_event(sent))
    assert response.status_code == 415
    assert response.mimetype == "application/problem+json"


@pytest.mark.parametrize("header", ["ce-id", "ce-source", "ce-type"])
def test_binary_mode_without_a_required_header_names_it(
    client: FlaskClient, auth: dict[str, str], recorded: Callable[[], int], header: str
) -> None:
    """A binary event missing a required attribute is a 422 naming the header."""
    message = to_binary_event(event())
    headers = {k: v for k, v in message.headers.items() if k != header}
    before = recorded()
    response = post(client, auth, HTTPMessage(headers=headers, body=message.body))
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert header in problem["detail"]
    assert problem["errors"] == [{"loc": ["header", header], "type": "missing",
                                  "msg": "required by CloudEvents 1.0"}]
    assert recorded() == before


def test_structured_mode_without_id_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    """A CloudEvent carries its own id; a structured event without one is refused."""
    body = {k: v for k, v in json.loads(to_structured_event(event()).body).items() if k != "id"}
    response = client.post(URL, data=json.dumps(body), headers=auth,
                           content_type="application/cloudevents+json")
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["loc"] == ["id"]


def test_binary_mode_invalid_attribute_is_located_in_its_header(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    """An invalid attribute value is reported at its ce- header, invalid data at the body."""
    response = post(client, auth, to_binary_event(event(data={"severity": "critical"})),
                    **{"ce-correlationid": "not a valid id!"})
    assert response.status_code == 422
    locations = [e["loc"] for e in response.get_json()["errors"]]
    assert ["header", "ce-correlationid"] in locations
    response = post(client, auth, to_binary_event(event(data={"severity": "critical"})))
    assert response.get_json()["errors"][0]["loc"] == ["body", "name"]


@pytest.mark.parametrize("mode", ["structured", "batched", "binary"])
@pytest.mark.parametrize("attribute", ["owner", "channel", "status"])
def test_reserved_attributes_are_refused_in_every_mode(
    client: FlaskClient, auth: dict[str, str], recorded: Callable[[], int], mode: str,
    attribute: str
) -> None:
    """Attributes the service sets from the token cannot come from an event, in any mode."""
    sent = event(**{attribute: "mallory"})
    message = {"structured": to_structured_event, "binary": to_binary_event,
               "batched": batch_of}[mode](sent)
    before = recorded()
    response = post(client, auth, message)
    assert response.status_code == 422
    problem = response.get_json()
    if mode == "batched":
        problem = problem["results"][0]["problem"]
    assert "from your token" in problem["errors"][0]["msg"]
    assert recorded() == before


@pytest.mark.parametrize("mode", ["structured", "batched", "binary"])
def test_json_limits_apply_in_every_mode(client: FlaskClient, auth: dict[str, str],
                                         mode: str) -> None:
    """Data nested deeper than INTEGRATION_MAX_JSON_DEPTH is refused in every mode."""
    deep: dict[str, Any] = {}
    for _ in range(40):
        deep = {"x": deep}
    sent = event("event", deep)
    message = {"structured": to_structured_event, "binary": to_binary_event,
               "batched": batch_of}[mode](sent)
    response = post(client, auth, message)
    assert response.status_code == 422
    problem = response.get_json()
    if mode == "batched":
        problem = problem["results"][0]["problem"]
    assert problem["errors"][0]["type"] == "too_deep"


def test_idempotency_key_tells_binary_events_with_the_same_data_apart(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    """In binary mode the attribute headers are part of the request an Idempotency-Key names."""
    first, second = to_binary_event(event()), to_binary_event(event())
    assert first.body == second.body
    key = {"Idempotency-Key": new_id()}
    assert post(client, auth, first, **key).status_code == 202
    replayed = post(client, auth, first, **key)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert post(client, auth, second, **key).status_code == 422


def test_structured_mode_body_must_be_one_event(client: FlaskClient,
                                                auth: dict[str, str]) -> None:
    """An array sent as one structured event is refused; batched mode is for arrays."""
    items = [json.loads(to_structured_event(event()).body)]
    response = client.post(URL, data=json.dumps(items), headers=auth,
                           content_type="application/cloudevents+json")
    assert response.status_code == 422
    assert BATCH_TYPE in response.get_json()["errors"][0]["msg"]


def test_received_events_are_counted_on_the_cloudevents_channel(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    """integration_messages_received_total labels every mode's events channel="cloudevents"."""
    def accepted() -> float:
        text = client.get("/metrics").get_data(as_text=True)
        found = re.search(r'^integration_messages_received_total\{channel="cloudevents",'
                          r'outcome="accepted",type="alert"\} (\S+)$', text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    before = accepted()
    post(client, auth, to_structured_event(event()))
    post(client, auth, to_binary_event(event()))
    post(client, auth, batch_of(event(), event()))
    assert accepted() == before + 4
