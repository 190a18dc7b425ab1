"""Checking records against the data model: the first processor, before any other.

    **validation** → limits (sanitise, cut to size) → secret redaction → PII redaction → yours

A record the server would reject, or misplace, is repaired here when its
meaning survives the repair, and dropped (``None``; the pipeline counts it under
``processor:ValidationProcessor``) when it does not:

- spans: an invalid ``trace_id`` or ``span_id``, or a start time that is not a
  positive 64-bit integer, drops the span — it could not be placed in any trace.
  A bad ``parent_span_id`` (not 16 hex digits, all zeros, or the span's own id)
  becomes ``None``, its value kept in ``tracerelay.invalid_parent_span_id``, so
  the span shows as a root instead of vanishing. An end before the start (a
  clock stepped back) becomes the start, the difference kept in
  ``tracerelay.clock_skew_ns``; an end that is not an integer at all becomes the
  start too, its value kept in ``tracerelay.invalid_end_time`` — except in a
  running span's announce (``SpanStart``, instant mode), which has no end by
  design. An empty or
  non-text name or type becomes the value's text, or else ``"unnamed"`` and
  ``"span"``; an unknown kind ``"internal"``; an unknown status code ``"unset"``
  (its message is kept).
- scores: a missing or blank name, or a ``trace_id`` or ``span_id`` that is set
  but invalid, drops the score: it would be attached to nothing, or to the wrong thing.
- other records pass through unchanged.

The valid span — nearly every one — costs a few type checks and at most three
regular-expression matches, usually one: trace and parent ids repeat from span to
span, and the last valid ones are remembered.
"""

from __future__ import annotations

import math
import re
from typing import Any

from tracerelay.announce import SpanStart
from tracerelay.ids import INVALID_SPAN_ID, INVALID_TRACE_ID, is_valid_span_id, is_valid_trace_id
from tracerelay.jsonsafe import safe_repr
from tracerelay.records import Score
from tracerelay.spans import SPAN_KINDS, Span

__all__ = ["CLOCK_SKEW", "INVALID_END_TIME", "INVALID_PARENT", "ValidationProcessor"]

INVALID_PARENT = "tracerelay.invalid_parent_span_id"
CLOCK_SKEW = "tracerelay.clock_skew_ns"
INVALID_END_TIME = "tracerelay.invalid_end_time"

_STATUS_CODES = frozenset({"unset", "ok", "error"})
_I64_MAX = (1 << 63) - 1
# The checks of tracerelay.ids, inlined: a function call would cost as much as the match.
_TRACE_ID = re.compile("[0-9a-f]{32}").fullmatch
_SPAN_ID = re.compile("[0-9a-f]{16}").fullmatch
_NOTHING = object()  # what the id caches hold before any id was found valid


class ValidationProcessor:
    """Repair what can be repaired in a span or score; drop (return None) what cannot."""

    __slots__ = ("_parent", "_trace_id")

    def __init__(self) -> None:
        # The last trace id and parent id found valid. The spans of a trace share one
        # trace id object, siblings one parent id object: an identity test spares most
        # spans two matches (and a stale entry is still a valid id).
        self._trace_id: object = _NOTHING
        self._parent: object = _NOTHING

    def __call__(self, record: Any) -> Any:
        """The record, repaired in place, or None when it cannot be kept."""
        if isinstance(record, Span):
            return self.process_span(record)
        if isinstance(record, Score):
            return _score(record)
        return record

    def process_span(self, span: Span) -> Span | None:
        """A span repaired in place, or None: the pipeline calls this for spans directly."""
        trace_id: Any = span.trace_id
        if trace_id is not self._trace_id:
            if type(trace_id) is not str or not _TRACE_ID(trace_id) or trace_id == INVALID_TRACE_ID:
                return None
            self._trace_id = trace_id
        span_id: Any = span.span_id
        if type(span_id) is not str or not _SPAN_ID(span_id) or span_id == INVALID_SPAN_ID:
            return None
        start: Any = span.start_time_unix_nano
        if type(start) is not int or not 0 < start <= _I64_MAX:
            return None
        parent: Any = span.parent_span_id
        if parent is not None and parent is not self._parent:
            if (
                type(parent) is str
                and _SPAN_ID(parent)
                and parent not in (INVALID_SPAN_ID, span_id)
            ):
                self._parent = parent
            else:
                _drop_parent(span, parent)
        elif parent is not None and parent == span_id:
            _drop_parent(span, parent)
        end: Any = span.end_time_unix_nano
        if (type(end) is not int or not start <= end <= _I64_MAX) and (
            end is not None or type(span) is not SpanStart
        ):
            _repair_end(span, start, end)
        name, type_, message = span.name, span.type, span.status_message
        try:
            plain = (
                type(name) is str
                and name != ""
                and type(type_) is str
                and type_ != ""
                and type(message) is str
                and span.kind in SPAN_KINDS
                and span.status_code in _STATUS_CODES
            )
        except TypeError:  # an unhashable kind or status code
            plain = False
        if not plain:
            _repair_fields(span)
        return span


def _drop_parent(span: Span, parent: Any) -> None:
    span.parent_span_id = None
    span.attributes[INVALID_PARENT] = parent if type(parent) is str else safe_repr(parent)


def _repair_fields(span: Span) -> None:
    """Name, kind, type and status made valid; only reached when one of them is not."""
    name: Any = span.name
    if type(name) is not str or not name:
        span.name = _text(name) or "unnamed"
    kind: Any = span.kind
    if type(kind) is not str or kind not in SPAN_KINDS:
        span.kind = "internal"
    type_: Any = span.type
    if type(type_) is not str or not type_:
        span.type = _text(type_) or "span"
    code: Any = span.status_code
    if type(code) is not str or code not in _STATUS_CODES:
        span.status_code = "unset"
    message: Any = span.status_message
    if type(message) is not str:
        span.status_message = _text(message)


def _repair_end(span: Span, start: int, end: Any) -> None:
    """Make the end a valid integer no earlier than ``start``, saying what was wrong."""
    if type(end) is float and math.isfinite(end):
        end = int(end)  # a float of nanoseconds: the intent is clear, the precision is not
    if type(end) is int and end <= _I64_MAX:
        if end >= start:
            span.end_time_unix_nano = end
            return
        span.attributes[CLOCK_SKEW] = start - end
    else:
        span.attributes[INVALID_END_TIME] = safe_repr(end)
    span.end_time_unix_nano = start


def _score(score: Score) -> Score | None:
    name: Any = score.name
    if type(name) is not str:
        score.name = name = _text(name)
    if not name.strip():
        return None
    trace_id, span_id = score.trace_id, score.span_id
    if trace_id is not None and not is_valid_trace_id(trace_id):
        return None
    if span_id is not None and not is_valid_span_id(span_id):
        return None
    return score


def _text(value: Any) -> str:
    """``value`` as text; ``""`` for None."""
    if value is None:
        return ""
    try:
        return str(value)
    except Exception:
        return safe_repr(value)
