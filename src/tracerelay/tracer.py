"""The tracer: starts spans with the right parent, trace and sampling decision.

A span's parent is, in order: the ``parent`` passed explicitly, the current
span of this context, or — only for a would-be root — an active OpenTelemetry
span, so tracerelay spans started inside OTel-instrumented code join that trace.
A root span draws a new trace id and the sampling decision; descendants inherit
both. Unsampled traces get ``NonRecordingSpan``s: ids for propagation, nothing
recorded, nothing exported.

In instant mode the client uses ``AnnouncingTracer``, which also hands each
new span to the ``Announcer`` (one ``deque.append``), so the pipeline can
announce spans that run long; deferred mode pays nothing for it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tracerelay import otel
from tracerelay.ids import INVALID_TRACE_ID, new_span_id, new_trace_id
from tracerelay.jsonsafe import to_jsonable
from tracerelay.processing.sampling import TraceIdRatioSampler
from tracerelay.spans import CURRENT, NonRecordingSpan, Span

if TYPE_CHECKING:
    from tracerelay.announce import Announcer

__all__ = ["USE_CURRENT", "AnnouncingTracer", "Tracer"]

USE_CURRENT: Any = object()
_OTEL_API = "opentelemetry.trace"
_modules = sys.modules


class Tracer:
    """Creates spans and hands finished ones to ``submit`` (the pipeline's entry)."""

    def __init__(
        self,
        submit: Callable[[Any], None],
        *,
        sample_rate: float = 1.0,
        capture_io: bool = False,
        max_io_length: int = 32_768,
    ) -> None:
        self.finish = submit
        self.sampler = TraceIdRatioSampler(sample_rate) if sample_rate < 1.0 else None
        self.capture_io = capture_io
        self.max_io_length = max_io_length

    def start_span(
        self,
        name: str,
        kind: str = "internal",
        type: str = "span",
        attributes: Mapping[str, Any] | None = None,
        parent: Any = USE_CURRENT,
    ) -> NonRecordingSpan:
        """A new span, not yet current; ``parent=None`` forces a new trace."""
        if parent is USE_CURRENT:
            parent = CURRENT.get()
            if parent is None and _OTEL_API in _modules:
                parent = otel.current_parent()
        elif parent is not None and parent.trace_id == INVALID_TRACE_ID:
            parent = None
        if parent is None:
            trace_id = new_trace_id()
            if self.sampler is not None and not self.sampler(trace_id):
                return NonRecordingSpan(trace_id, new_span_id())
            return Span(self, name, trace_id, new_span_id(), None, kind, type, attributes)
        if not parent.sampled:
            return NonRecordingSpan(
                parent.trace_id,
                new_span_id(),
                trace_state=parent.trace_state,
                parent_span_id=parent.span_id,
            )
        return Span(
            self,
            name,
            parent.trace_id,
            new_span_id(),
            parent.span_id,
            kind,
            type,
            attributes,
            parent.trace_state,
        )

    def capture(self, value: Any) -> Any:
        """A JSON-safe snapshot of ``value``, cut to ``max_io_length``."""
        return to_jsonable(value, max_length=self.max_io_length)


class AnnouncingTracer(Tracer):
    """A ``Tracer`` that also tells ``announcer`` of each recording span it starts."""

    def __init__(
        self,
        submit: Callable[[Any], None],
        announcer: Announcer,
        *,
        sample_rate: float = 1.0,
        capture_io: bool = False,
        max_io_length: int = 32_768,
    ) -> None:
        super().__init__(
            submit, sample_rate=sample_rate, capture_io=capture_io, max_io_length=max_io_length
        )
        self.announcer = announcer

    def start_span(
        self,
        name: str,
        kind: str = "internal",
        type: str = "span",
        attributes: Mapping[str, Any] | None = None,
        parent: Any = USE_CURRENT,
    ) -> NonRecordingSpan:
        """A new span, as ``Tracer.start_span``; a recording one is also noted as started."""
        span = Tracer.start_span(self, name, kind, type, attributes, parent)
        if span.__class__ is Span:
            # The only work instant mode adds to traced code: no lock, no clock read.
            self.announcer.starts.append(span)
        return span
