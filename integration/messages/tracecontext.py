"""W3C Trace Context values (``traceparent``, ``tracestate``): parsed and checked, no I/O.

A message carries them as the CloudEvents Distributed Tracing extension attributes of the
same names, so a trace continues wherever the message goes (the broker, a requeue, the
outbox, the reconciler's re-delivery).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: The envelope attributes (and header names) that carry a context.
TRACE_ATTRIBUTES = (TRACEPARENT, TRACESTATE)

#: ``version-traceid-parentid-flags``, lower-case hex (W3C Trace Context, section 3.2).
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
#: One ``key=value`` list member (section 3.3.1); at most 32 members, 512 characters kept.
_TRACESTATE_MEMBER = re.compile(
    r"^(?:[a-z0-9][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$")
MAX_TRACESTATE_MEMBERS = 32
MAX_TRACESTATE_LENGTH = 512


class TraceContext(NamedTuple):
    """A valid ``traceparent`` and the ``tracestate`` that goes with it (may be empty)."""

    traceparent: str
    tracestate: str = ""

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35]

    @property
    def span_id(self) -> str:
        return self.traceparent[36:52]

    @property
    def sampled(self) -> bool:
        return bool(int(self.traceparent[53:55], 16) & 1)

    def attributes(self) -> dict[str, str]:
        """The envelope attributes (and header names) that carry this context."""
        if self.tracestate:
            return {TRACEPARENT: self.traceparent, TRACESTATE: self.tracestate}
        return {TRACEPARENT: self.traceparent}


def traceparent_error(value: Any) -> str | None:
    """Why ``value`` is not a valid ``traceparent``, or None when it is."""
    if not isinstance(value, str):
        return "traceparent must be a string"
    match = _TRACEPARENT.match(value)
    if match is None:
        return ("traceparent must be version-traceid-parentid-flags in lower-case hex "
                "(00-<32 hex>-<16 hex>-<2 hex>)")
    version, trace_id, span_id, _, rest = match.groups()
    if version == "ff":
        return "traceparent version ff is invalid"
    if version == "00" and rest:
        return "a version 00 traceparent has exactly four fields"
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return "traceparent trace id and parent id must not be all zeros"
    return None


def tracestate_error(value: Any) -> str | None:
    """Why ``value`` is not a valid ``tracestate``, or None when it is."""
    if not isinstance(value, str):
        return "tracestate must be a string"
    if len(value) > MAX_TRACESTATE_LENGTH:
        return f"tracestate is longer than {MAX_TRACESTATE_LENGTH} characters"
    members = [m.strip() for m in value.split(",") if m.strip()]
    if len(members) > MAX_TRACESTATE_MEMBERS:
        return f"tracestate has more than {MAX_TRACESTATE_MEMBERS} members"
    if any(not _TRACESTATE_MEMBER.match(m) for m in members):
        return "tracestate members must be key=value as W3C Trace Context defines them"
    return None


def parse(traceparent: Any, tracestate: Any = None) -> TraceContext | None:
    """The context of these values, or None when ``traceparent`` is missing or invalid (an
    invalid ``tracestate`` alone is dropped, as the W3C recommendation says)."""
    if traceparent is None or traceparent_error(traceparent) is not None:
        return None
    state = tracestate if tracestate and tracestate_error(tracestate) is None else ""
    # A later version's extra fields are not ours to forward (section 3.2.4).
    return TraceContext(traceparent[:55], ",".join(s.strip() for s in state.split(",")
                                                   if s.strip()))


def of(carrier: Mapping[str, Any] | None) -> TraceContext | None:
    """The context an envelope or a header mapping carries, or None."""
    if not carrier:
        return None
    traceparent = carrier.get(TRACEPARENT)
    if traceparent is None:
        return None
    return parse(traceparent, carrier.get(TRACESTATE))
