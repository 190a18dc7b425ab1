"""Helpers for testing code instrumented with tracerelay.

``capture()`` swaps in a client that processes and exports synchronously into
memory, so each span is in the list the moment it ends::

    from tracerelay.testing import capture

    def test_checkout_is_traced():
        with capture() as spans:
            checkout(order)
        assert [s.name for s in spans] == ["charge", "checkout"]
        assert spans.by_name("charge").parent_span_id == spans.by_name("checkout").span_id

The previous client (if any) is back in place when the block ends. The
configuration ignores ``TRACERELAY_*`` environment variables unless you pass
``environ=os.environ``; other options are keyword arguments as for ``init()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tracerelay.api import STATE, _install
from tracerelay.client import Client
from tracerelay.export import ExportResult
from tracerelay.spans import Span

__all__ = ["CapturedSpans", "capture"]


class CapturedSpans(list[Span]):
    """The finished spans, in the order they ended, plus every other record."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[Any] = []
        self.client: Client | None = None

    @property
    def scores(self) -> list[Any]:
        """Scores recorded with ``tracerelay.score``."""
        return [r for r in self.records if r.event_type == "quality_score_create"]

    @property
    def events(self) -> list[Any]:
        """Generic events recorded with ``tracerelay.event``."""
        return [r for r in self.records if r.event_type == "event_create"]

    def by_name(self, name: str) -> Span:
        """The one span called ``name`` (AssertionError when there are none or several)."""
        found = [s for s in self if s.name == name]
        assert len(found) == 1, f"expected one span named {name!r}, found {len(found)}"
        return found[0]

    def roots(self) -> list[Span]:
        """Spans without a parent among the captured ones."""
        ids = {s.span_id for s in self}
        return [s for s in self if s.parent_span_id is None or s.parent_span_id not in ids]

    def children(self, parent: Span) -> list[Span]:
        """Direct children of ``parent``, in start order."""
        kids = [
            s for s in self if s.parent_span_id == parent.span_id and s.trace_id == parent.trace_id
        ]
        return sorted(kids, key=lambda s: (s.start_time_unix_nano, s.sequence))

    def tree(self) -> list[tuple[int, str]]:
        """``(depth, name)`` for every span, depth-first in start order: handy in asserts."""
        out: list[tuple[int, str]] = []

        def walk(span: Span, depth: int) -> None:
            out.append((depth, span.name))
            for child in self.children(span):
                walk(child, depth + 1)

        for root in sorted(self.roots(), key=lambda s: (s.start_time_unix_nano, s.sequence)):
            walk(root, 0)
        return out


class _CaptureExporter:
    def __init__(self, sink: CapturedSpans) -> None:
        self.sink = sink

    def export(self, records: Sequence[Any]) -> ExportResult:
        for record in records:
            if isinstance(record, Span):
                self.sink.append(record)
            else:
                self.sink.records.append(record)
        return ExportResult.SUCCESS

    def force_flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self) -> None:
        return None


@contextmanager
def capture(**options: Any) -> Iterator[CapturedSpans]:
    """Record into a list for the duration of the block; yields that list."""
    options.setdefault("environ", {})
    sink = CapturedSpans()
    client = Client(exporters=[_CaptureExporter(sink)], synchronous=True, **options)
    sink.client = client
    previous = STATE.client
    _install(client)
    try:
        yield sink
    finally:
        _install(previous)
        client.shutdown(timeout=1.0)
