"""The AMQP 0-9-1 frames of ``integration.process`` task messages, encoded a chunk at a time.

py-amqp encodes every publish's properties afresh, with a pure-Python field-table encoder
(a large part of a publish's CPU, for the twenty headers of a Celery message), and writes every
message with its own ``sendall``. The messages of one producer differ only in their id, root
id, arguments' summary, correlation id, trace context (``traceparent``, ``tracestate``, when
the message has one) and body, so the rest of the header table is encoded once, and a
chunk's frames go out in one write. The frames are byte for byte those py-amqp writes for
``basic_publish`` of the message Celery's ``as_task_v2`` builds (tested), and a stock worker
consumes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from struct import pack
from typing import Any, NamedTuple

from amqp import spec
from amqp.serialization import dumps
from kombu.utils.json import dumps as json_dumps

from integration.messages.routing import PROCESS_TASK

#: Celery's protocol-2 embed of a task without callbacks, errbacks, chain or chord.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
#: The headers that differ from one message to the next (besides the caller's extra ones).
_VARYING = ("id", "root_id", "argsrepr", "shadow")
_CONTENT_TYPE, _CONTENT_ENCODING = "application/json", "utf-8"
_DELIVERY_MODE, _PRIORITY = 2, 0  # persistent, as Celery sends; kombu's default priority
#: Property flags: content type, content encoding, headers, delivery mode, priority,
#: correlation id and reply-to present (py-amqp's order, first property the highest bit).
_FLAGS = 0b1111111 << 9
_FRAME_END = b"\xce"


class TaskMessage(NamedTuple):
    """One task message to publish: its queue, task id, JSON body and varying headers."""

    queue: str
    id: str
    body: bytes
    headers: Mapping[str, str]


def _shortstr(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogatepass")
    return pack(">B", len(raw)) + raw


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return pack(">BHI", kind, channel, len(payload)) + payload + _FRAME_END


class TaskFrames:
    """Encodes this producer's task messages as Basic.Publish frames."""

    def __init__(self, celery_app: Any, origin: str) -> None:
        headers, properties, _, _ = celery_app.amqp.as_task_v2(
            "", PROCESS_TASK, args=((),), kwargs={}, origin=origin, ignore_result=True,
            argsrepr="",
        )
        constant = {k: v for k, v in headers.items() if k not in _VARYING}
        self._constant_entries: bytes = dumps("F", [constant])[4:]  # without the table size
        self._before_table = (pack(">H", _FLAGS) + _shortstr(_CONTENT_TYPE)
                              + _shortstr(_CONTENT_ENCODING))
        self._after_table = pack(">BB", _DELIVERY_MODE, _PRIORITY)
        self._reply_to = _shortstr(properties.get("reply_to") or "")
        self._methods: dict[str, bytes] = {}

    @staticmethod
    def message(queue: str, task_id: str, args: tuple[Any, ...],
                headers: Mapping[str, str]) -> TaskMessage:
        """The message of a task called with ``args``; ``headers`` are added to Celery's."""
        body = json_dumps([list(args), {}, _EMBED]).encode("utf-8")
        return TaskMessage(queue, task_id, body, headers)

    def encode(self, message: TaskMessage, channel: int, frame_max: int) -> bytes:
        """Method, header and body frames of publishing ``message`` on ``channel`` through
        the default exchange to its queue, mandatory (an unroutable message comes back)."""
        method = self._methods.get(message.queue)
        if method is None:
            method = self._methods[message.queue] = pack(
                ">HH", *spec.Basic.Publish) + dumps("Bssbb", (0, "", message.queue, True, False))
        varying = {"id": message.id, "root_id": message.id, **message.headers}
        entries = self._constant_entries + b"".join(
            _shortstr(key) + b"S" + pack(">I", len(raw)) + raw
            for key, raw in ((k, str(v).encode("utf-8", "surrogatepass"))
                             for k, v in varying.items()))
        body = message.body
        header = b"".join((pack(">HHQ", spec.Basic.Publish[0], 0, len(body)),
                           self._before_table, pack(">I", len(entries)), entries,
                           self._after_table, _shortstr(message.id), self._reply_to))
        frames = [_frame(1, channel, method), _frame(2, channel, header)]
        step = frame_max - 8
        frames += [_frame(3, channel, body[i:i + step]) for i in range(0, len(body), step)]
        return b"".join(frames)


__all__ = ["TaskFrames", "TaskMessage"]
