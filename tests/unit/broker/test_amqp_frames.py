"""The hand-encoded Basic.Publish frames are byte for byte what py-amqp writes for the same
task message, whatever its size (a body split over frames) or characters."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import amqp
import pytest
from amqp import spec
from amqp.method_framing import frame_writer
from kombu.utils.json import dumps

from integration.broker.amqp_frames import TaskFrames
from integration.broker.celery_app import create_celery
from integration.messages.routing import PROCESS_TASK


def py_amqp_frames(message: amqp.Message, queue: str, channel: int, frame_max: int) -> bytes:
    """What py-amqp's own frame writer sends for ``basic_publish`` of ``message``."""
    written: list[bytes] = []
    connection = SimpleNamespace(frame_max=frame_max, bytes_sent=0)
    transport = SimpleNamespace(write=lambda data: written.append(bytes(data)))
    write = frame_writer(connection, transport)
    write(1, channel, spec.Basic.Publish, amqp.serialization.dumps(
        "Bssbb", (0, "", queue, True, False)), message)
    return b"".join(written)


@pytest.mark.parametrize("text,frame_max", [
    ("cpu", 131072),
    ("é ü 漢字 \U0001f600", 131072),
    ("x" * 5000, 4096),  # the body spans two frames
])
@pytest.mark.parametrize("trace", [
    {}, {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
         "tracestate": "a=b"}])
def test_frames_equal_py_amqp_s(text: str, frame_max: int, trace: dict[str, str]) -> None:
    app = create_celery("integration.test")
    frames = TaskFrames(app, origin="gateway")
    envelope: dict[str, Any] = {"id": "m-1", "type": "metric", "source": "s",
                                "data": {"name": text, "value": 1.5}}
    extra = {"argsrepr": repr({"id": "m-1", "type": "metric"}), "shadow": "p[metric]",
             "correlationid": "c-1", **trace}
    ours = frames.encode(TaskFrames.message("metric", "m-1", (envelope,), extra), 7, frame_max)

    headers, properties, body, _ = app.amqp.as_task_v2(
        "m-1", PROCESS_TASK, args=(envelope,), kwargs={}, origin="gateway",
        ignore_result=True, argsrepr=extra["argsrepr"], shadow=extra["shadow"])
    # A header table's order carries no meaning; py-amqp writes the dict's.
    ordered = {k: v for k, v in headers.items()
               if k not in ("id", "root_id", "argsrepr", "shadow")}
    ordered.update(id="m-1", root_id="m-1", argsrepr=extra["argsrepr"], shadow=extra["shadow"],
                   correlationid="c-1", **trace)
    message = amqp.Message(dumps(body).encode(), priority=0,
                           content_type="application/json", content_encoding="utf-8",
                           application_headers=ordered, delivery_mode=2, **properties)
    assert ours == py_amqp_frames(message, "metric", 7, frame_max)
