"""W3C Trace Context values: parsed when valid, refused in an envelope when not."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from integration.messages import tracecontext
from integration.messages.envelope import Envelope
from integration.messages.tracecontext import TraceContext, traceparent_error, tracestate_error

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_is_parsed() -> None:
    """The trace id, parent id and sampled flag come from their fields."""
    context = tracecontext.parse(VALID, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    assert context == TraceContext(VALID, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    assert context.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert context.span_id == "00f067aa0ba902b7"
    assert context.sampled


@pytest.mark.parametrize("value", [
    "", "garbage", VALID.upper(), VALID[:-1], VALID + "-extra",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
    42,
])
def test_an_invalid_traceparent_is_none(value: object) -> None:
    """Wrong length, case, version ff, all-zero ids, a non-string: no context, with a reason."""
    assert tracecontext.parse(value) is None
    assert traceparent_error(value)


def test_a_later_version_keeps_its_first_four_fields() -> None:
    """A future version may add fields; only the four known ones are carried on."""
    later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next"
    context = tracecontext.parse(later)
    assert context is not None and context.traceparent == later[:55]


def test_an_invalid_tracestate_alone_is_dropped() -> None:
    """The traceparent stays; a malformed tracestate is not forwarded."""
    assert tracestate_error("not a list member")
    assert tracecontext.parse(VALID, "not a list member") == TraceContext(VALID, "")
    assert tracestate_error(",".join(f"k{i}=v" for i in range(33)))


def test_the_context_of_a_mapping() -> None:
    """An envelope or a header mapping gives its context, or None without a traceparent."""
    assert tracecontext.of({"traceparent": VALID}) == TraceContext(VALID)
    assert tracecontext.of({"tracestate": "a=b"}) is None
    assert tracecontext.of(None) is None
    assert TraceContext(VALID, "a=b").attributes() == {"traceparent": VALID, "tracestate": "a=b"}


def test_an_envelope_refuses_a_malformed_traceparent() -> None:
    """The Distributed Tracing extension is checked like the rest of the envelope."""
    with pytest.raises(ValidationError, match="traceparent"):
        Envelope.model_validate({"source": "s", "type": "t", "traceparent": "00-bad"})
    with pytest.raises(ValidationError, match="tracestate"):
        Envelope.model_validate({"source": "s", "type": "t", "traceparent": VALID,
                                 "tracestate": "=nokey"})
    envelope = Envelope.model_validate({"source": "s", "type": "t", "traceparent": VALID})
    assert envelope.to_wire()["traceparent"] == VALID


def test_an_envelope_keeps_its_own_context() -> None:
    """``continues`` adds the sender's context only to a message that has none."""
    other = "00-11111111111111111111111111111111-2222222222222222-00"
    own = Envelope.model_validate({"source": "s", "type": "t", "traceparent": VALID})
    own.continues(TraceContext(other, "a=b"))
    assert own.to_wire()["traceparent"] == VALID and "tracestate" not in own.to_wire()
    bare = Envelope.model_validate({"source": "s", "type": "t"})
    bare.continues(TraceContext(other, "a=b"))
    assert bare.to_wire()["traceparent"] == other and bare.to_wire()["tracestate"] == "a=b"
