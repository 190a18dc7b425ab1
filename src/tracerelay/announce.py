"""Long spans in instant mode: announced while they run, completed when they end.

A span still open ``announce_after`` seconds after it started is sent at once
as ``observation_create`` without an end (``SpanStart``, a snapshot), and its
end later as ``observation_complete`` (``SpanCompletion``: the full span, a
fresh event id). A span that ends sooner is sent once, as every span is in
deferred mode: ``observation_create`` with start and end. The server merges
the two halves by span id in whatever order and however often they arrive
(SPEC §2), so a retried or replayed announce after its completion does no harm.

Where the work happens::

    traced code  Tracer.start_span ──► Announcer.starts.append(span)   (instant mode only)
    pipeline     Announcer.step(batch), under the export lock, before processing:
                   1. the starts appended so far join ``pending`` (span id → span)
                   2. each ended span of the batch leaves ``pending``; one that was
                      announced is replaced by its SpanCompletion
                   3. each pending span started ≥ announce_after ago leaves ``pending``:
                      still open → its SpanStart joins the batch; ended → nothing
                 then every record, announces included, goes through the processors
                 (validation, limits, redaction, yours) and on to the exporters.

Why that order is safe: the pipeline announces a span only after reading its
end time as unset, on the same thread that later processes the span's end
(``Span.end`` sets the end time before it submits the span), so a span whose
end reaches a batch is always known by then to have been announced or not.
And every span of a batch had its start appended before its end was
submitted, so step 1 has seen it before step 2 looks for it.

The snapshot copies what processors change in place (attributes, events,
links), so redacting and cutting the announce never touches the running span.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

from tracerelay.spans import NonRecordingSpan, Span, now_ns

__all__ = ["Announcer", "SpanCompletion", "SpanStart"]

_FIELDS = tuple(sorted({*NonRecordingSpan.__slots__, *Span.__slots__}))
# Span ids announced whose end has not come (yet): a span that never ends stays here,
# so the set is bounded. Forgetting one only costs its end the observation_complete
# type: it then leaves as observation_create with start and end, which the server
# merges with the announce all the same.
_MAX_ANNOUNCED = 100_000


class SpanStart(Span):
    """A running span's announce: ``observation_create`` without end, status unset.

    A snapshot taken on the pipeline thread; the running span goes on unchanged.
    """

    __slots__ = ()


class SpanCompletion(Span):
    """An announced span's end: ``observation_complete`` with the full payload."""

    __slots__ = ()
    event_type = "observation_complete"


def _copy(span: Span, cls: type[Span]) -> Any:
    copy = object.__new__(cls)
    for name in _FIELDS:
        object.__setattr__(copy, name, getattr(span, name))
    copy.event_id = None  # a fresh event id, drawn when the pipeline processes it
    copy._token = None
    return copy


def _items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events or links, each in a dict of its own with an attributes dict of its own."""
    return [{**item, "attributes": dict(item.get("attributes") or {})} for item in list(items)]


def snapshot(span: Span) -> SpanStart:
    """The announce of ``span``, running: what it holds now, without end or status."""
    start: SpanStart = _copy(span, SpanStart)
    # Copies of what processors edit in place, taken each in one C call: a write by
    # the traced code in the meantime lands before or after, never half-way.
    start.attributes = dict(span.attributes)
    if span._events:
        start._events = _items(span._events)
    if span._links:
        start._links = _items(span._links)
    start.end_time_unix_nano = None
    start.status_code = "unset"
    start.status_message = ""
    return start


def completion(span: Span) -> SpanCompletion:
    """The ``observation_complete`` of an ended span that was announced."""
    # Shallow: an ended span no longer changes, and the original is not exported.
    done: SpanCompletion = _copy(span, SpanCompletion)
    return done


class Announcer:
    """Decides, on the pipeline thread, which spans are announced; see the module docstring.

    ``starts`` is the one thing traced code touches: the tracer appends each new
    span to it (a ``deque.append``: no lock). Bounded by ``max_starts``: should the
    pipeline fall that far behind, the oldest starts are forgotten, and those spans
    are sent once, at their end, as in deferred mode.
    """

    def __init__(self, after: float, *, max_starts: int = 100_000) -> None:
        self.after = after
        self._after_ns = int(after * 1e9)
        # How often the pipeline thread looks when nothing else wakes it: a span is
        # announced at most this late (plus processing), and an idle wake costs µs.
        self.tick = min(max(after / 4, 0.05), 1.0)
        self.starts: deque[Span] = deque(maxlen=max_starts)
        self._pending: dict[str, Span] = {}
        self._announced: OrderedDict[str, None] = OrderedDict()

    def step(self, batch: Sequence[Any]) -> Sequence[Any]:
        """The batch to process: due announces first, announced spans' ends as completions."""
        pending, announced = self._pending, self._announced
        starts = self.starts
        if starts:
            popleft = starts.popleft
            # Only this thread takes from the deque: what is counted here is there to pop.
            for _ in range(len(starts)):
                span = popleft()
                pending[span.span_id] = span
        forget = pending.pop
        out: list[Any] | None = None
        if announced:
            for i, record in enumerate(batch):
                if type(record) is Span:
                    span_id = record.span_id
                    if forget(span_id, None) is None and span_id in announced:
                        del announced[span_id]
                        if out is None:
                            out = list(batch)
                        out[i] = completion(record)
        else:  # the common case, kept lean: no span of this batch can have been announced
            for record in batch:
                if type(record) is Span:
                    forget(record.span_id, None)
        due = self._due() if pending else []
        if due:
            return due + (out if out is not None else list(batch))
        return out if out is not None else batch

    def _due(self) -> list[Any]:
        pending, announced = self._pending, self._announced
        cutoff = now_ns() - self._after_ns
        due: list[Any] = []
        while pending:
            span_id, span = next(iter(pending.items()))
            if span.start_time_unix_nano > cutoff:
                break
            del pending[span_id]
            if span.end_time_unix_nano is None:
                due.append(snapshot(span))
                announced[span_id] = None
                if len(announced) > _MAX_ANNOUNCED:
                    announced.popitem(last=False)
        return due

    def close(self) -> None:
        """Stop collecting starts (at shutdown): later ones are dropped as they come."""
        self.starts = deque(maxlen=0)
        self._pending.clear()
