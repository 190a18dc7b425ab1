"""Helpers shared by the processing tests: spans built by hand, outside any pipeline."""

from __future__ import annotations

from typing import Any

from tracerelay.ids import new_span_id, new_trace_id
from tracerelay.spans import Span


class StubTracer:
    """Stands in for the tracer a span reports to when it ends: it keeps nothing."""

    def finish(self, span: Span) -> None:
        """Ignore the finished span."""

    def capture(self, value: Any) -> Any:
        """Keep ``value`` as given."""
        return value


TRACER: Any = StubTracer()


def bare_span(attributes: dict[Any, Any] | None = None) -> Span:
    """A finished span built by hand: it holds whatever the test puts in, unsanitised."""
    span = Span(TRACER, "op", new_trace_id(), new_span_id(), None, "internal", "span", None)
    span.attributes = dict(attributes or {})
    span.end()
    return span
