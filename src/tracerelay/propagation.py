"""W3C Trace Context: ``traceparent`` and ``tracestate`` across process boundaries.

``inject(headers)`` writes the current span's ids into outgoing headers;
``extract(headers)`` reads them from incoming ones and returns a remote parent
(a ``NonRecordingSpan``) or None. Use the result as ``span(..., parent=ctx)``
or enter it — ``with tracerelay.extract(request.headers): ...`` — so every span
started inside joins the caller's trace. Malformed headers are ignored, as the
W3C recommendation asks: a new trace starts instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any

from tracerelay.ids import INVALID_SPAN_ID, INVALID_TRACE_ID
from tracerelay.spans import CURRENT, NonRecordingSpan

__all__ = ["extract", "format_traceparent", "inject", "parse_traceparent"]

_TRACEPARENT = re.compile(
    r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[0-9a-zA-Z._~+/=-]*)?$"
)
_TRACESTATE_MEMBER = re.compile(
    r"^[a-z0-9][_0-9a-z\-*/@]{0,255}=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$"
)
_MAX_TRACESTATE_MEMBERS = 32


def format_traceparent(trace_id: str, span_id: str, sampled: bool) -> str:
    """``00-<trace_id>-<span_id>-<flags>``."""
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def parse_traceparent(value: str) -> tuple[str, str, bool] | None:
    """``(trace_id, span_id, sampled)`` from a ``traceparent`` value, or None if invalid."""
    match = _TRACEPARENT.match(value.strip())
    if not match:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == INVALID_TRACE_ID or span_id == INVALID_SPAN_ID:
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


def _clean_tracestate(value: str) -> str:
    members = [m.strip() for m in value.split(",") if m.strip()]
    if len(members) > _MAX_TRACESTATE_MEMBERS or not all(
        _TRACESTATE_MEMBER.match(m) for m in members
    ):
        return ""
    return ",".join(members)


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        for key, item in headers.items():
            if isinstance(key, str) and key.lower() == name:
                value = item
                break
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if isinstance(value, str) else None


def inject(
    headers: MutableMapping[str, str], span: NonRecordingSpan | None = None
) -> MutableMapping[str, str]:
    """Write ``traceparent`` (and ``tracestate``) for ``span`` (default: the current one)."""
    span = span if span is not None else CURRENT.get()
    if span is None or span.trace_id == INVALID_TRACE_ID:
        return headers
    headers["traceparent"] = format_traceparent(span.trace_id, span.span_id, span.sampled)
    if span.trace_state:
        headers["tracestate"] = span.trace_state
    return headers


def extract(headers: Mapping[str, Any]) -> NonRecordingSpan | None:
    """The remote parent described by ``headers``, or None when absent or malformed."""
    try:
        value = _header(headers, "traceparent")
        if value is None:
            return None
        parsed = parse_traceparent(value)
        if parsed is None:
            return None
        trace_id, span_id, sampled = parsed
        state = _header(headers, "tracestate")
        return NonRecordingSpan(
            trace_id,
            span_id,
            sampled=sampled,
            trace_state=_clean_tracestate(state) if state else "",
        )
    except Exception:
        return None
