"""Helpers shared by the processing tests: spans built by hand, outside any pipeline."""

from __future__ import annotations

from collections.abc import Callable
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


def same_shape(
    before: Any,
    after: Any,
    *,
    hidden: Callable[[Any], bool] = lambda key: False,
    marker: str = "",
) -> None:
    """Assert ``after`` keeps the keys, list lengths and kinds of ``before``.

    Under a key for which ``hidden(key)`` is true, the value may instead be the
    ``marker`` (or a list of markers) a redactor put there.
    """
    if isinstance(before, dict):
        assert isinstance(after, dict)
        assert list(after) == list(before)
        for key, value in before.items():
            if hidden(key):
                assert after[key] in (marker, value) or isinstance(after[key], list)
            else:
                same_shape(value, after[key], hidden=hidden, marker=marker)
    elif isinstance(before, list):
        assert isinstance(after, list)
        assert len(after) == len(before)
        for old, new in zip(before, after, strict=True):
            same_shape(old, new, hidden=hidden, marker=marker)
    elif isinstance(before, str):
        assert isinstance(after, str)
    else:
        assert after == before
