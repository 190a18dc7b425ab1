"""Interoperation with OpenTelemetry, when the application also uses it.

If an OpenTelemetry span is active when a tracerelay root span starts, the new
span joins that trace as its child. The check runs only for would-be roots and
only once ``opentelemetry.trace`` has been imported by someone, so applications
without OpenTelemetry pay one dictionary lookup per root span.
"""

from __future__ import annotations

import sys

from tracerelay.spans import NonRecordingSpan

__all__ = ["current_parent"]


def current_parent() -> NonRecordingSpan | None:
    """The active OpenTelemetry span as a parent, or None."""
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return None
    try:
        ctx = api.get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        state = ctx.trace_state.to_header() if ctx.trace_state else ""
        return NonRecordingSpan(
            f"{ctx.trace_id:032x}",
            f"{ctx.span_id:016x}",
            sampled=bool(ctx.trace_flags & 1),
            trace_state=state,
        )
    except Exception:
        return None
