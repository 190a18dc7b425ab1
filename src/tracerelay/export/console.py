"""The console exporter: each finished trace printed as an indented tree a person can read.

It sits at the end of the pipeline (record → process → export), installed by
``exporter="console"`` or passed in ``exporters=[...]``. Spans reach it in the
order they ended, so children come before their parents and one trace may be
spread over several batches; it holds each trace's spans until the root span
has arrived, then prints the trace whole::

    trace 1b0376b0d9e703fce4b2e0a8da2b8fe7  answer_question  2.41 ms  ✗ 1 error  3 spans
    └─ answer_question  [agent]  2.41 ms
       ├─ plan  [generation]  310 µs  gpt-4o-mini 120→30 tok $0.0004
       │     · temperature=0  prompt.chars=120
       └─ lookup_order  [tool]  1.82 ms  ✗ TimeoutError: upstream timed out
             · order.id=1042
    • score helpful = 1  span a980164041f5cbe9

A root is a span without a parent, or a ``server``/``consumer`` span whose
parent is not among the trace's spans (a request whose caller is in another
process). Spans whose parent never arrived are shown at the top level with a
note; spans that end after their trace was printed are shown as late. Scores,
events and trace updates of a held trace are printed with it; other records get
one line each. Memory is bounded: beyond ``max_traces`` held traces the oldest
is printed early, a trace without its root for ``wait_for_root`` seconds is
printed at the next batch, and ``force_flush()``/``shutdown()`` print all that
is held; each is marked incomplete.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from tracerelay.announce import SpanStart
from tracerelay.export import ExportResult
from tracerelay.spans import Span

__all__ = ["ConsoleExporter"]

_ENTRY_KINDS = frozenset({"server", "consumer"})
# Names and values come from traced code, often from its users: control characters
# would break the tree or drive the terminal, so they are shown escaped.
_CONTROL = {i: f"\\x{i:02x}" for i in (*range(32), 127)} | {9: "\\t", 10: "\\n", 13: "\\r"}
# A stream that cannot encode these glyphs (a legacy code page) gets ASCII stand-ins.
_GLYPHS = "├─└│→✗·•…µ"
_ASCII = ["|", "-", "`", "|", "->", "x", "-", "*", "...", "u"]
_TO_ASCII = str.maketrans(dict(zip(_GLYPHS, _ASCII, strict=True)))
_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}
_LABELS = {"quality_score_create": "score", "event_create": "event", "trace_update": "trace update"}
_TRACE_FIELDS = ("name", "user_id", "session_id", "tags", "release", "environment")
_MAX_RECORDS_PER_TRACE = 50
_MAX_EXCEPTIONS = 3
_MAX_VALUE = 60
_MAX_MESSAGE = 80


def _clean(text: object) -> str:
    return str(text).translate(_CONTROL)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _duration(ns: int | None) -> str:
    if ns is None:
        return "running"
    if ns < 1_000_000:
        return f"{ns / 1000:.0f} µs"
    if ns < 10_000_000:
        return f"{ns / 1e6:.2f} ms"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(_value(v) for v in value) + "]"
    elif isinstance(value, str) and (not value or " " in value):
        text = '"' + value + '"'
    else:
        text = str(value)
    return _cut(_clean(text), _MAX_VALUE)


def _money(cost: float) -> str:
    if cost <= 0:
        return f"${cost:.2f}"
    # Two significant digits for fractions of a cent, as model calls usually cost.
    text = f"{cost:.{max(2, 1 - math.floor(math.log10(cost)))}f}"
    return "$" + (text.rstrip("0") if cost < 0.01 else text)


def _message(text: str) -> str:
    return _cut(_clean(text or "error"), _MAX_MESSAGE)


def _pairs(mapping: Mapping[str, Any]) -> list[str]:
    return [f"{_clean(k)}={_value(v)}" for k, v in mapping.items()]


def _trace_id_of(record: Any) -> str | None:
    trace_id = getattr(record, "trace_id", None)
    if trace_id is None:
        payload = getattr(record, "payload", None)
        trace_id = payload.get("trace_id") if isinstance(payload, Mapping) else None
    return trace_id if isinstance(trace_id, str) else None


def _start_order(span: Span) -> tuple[int, int]:
    return span.start_time_unix_nano, span.sequence


def _is_root(span: Span, spans: Mapping[str, Span]) -> bool:
    parent = span.parent_span_id
    return parent is None or (span.kind in _ENTRY_KINDS and parent not in spans)


class _Trace:
    """The spans and other records of one trace, held until its root arrives."""

    def __init__(self, trace_id: str, now: float) -> None:
        self.trace_id = trace_id
        self.first_seen = now
        self.spans: dict[str, Span] = {}
        self.entries: list[Span] = []  # spans that may be roots (see _is_root)
        self.records: list[Any] = []
        self.skipped = 0
        self.fields: dict[str, Any] = {}

    def add_span(self, span: Span) -> None:
        self.spans[span.span_id] = span
        if span.parent_span_id is None or span.kind in _ENTRY_KINDS:
            self.entries.append(span)

    def add_record(self, record: Any) -> None:
        if getattr(record, "event_type", None) == "trace_update":
            fields = getattr(record, "fields", None) or getattr(record, "payload", None)
            if isinstance(fields, Mapping):
                self.fields.update((k, v) for k, v in fields.items() if k != "trace_id")
                return
        if len(self.records) < _MAX_RECORDS_PER_TRACE:
            self.records.append(record)
        else:
            self.skipped += 1

    def complete(self) -> bool:
        return any(_is_root(span, self.spans) for span in self.entries)


class _Renderer:
    """Lines for one write, with colour and width fixed for it."""

    def __init__(self, *, color: bool, width: int, show_attributes: bool) -> None:
        self.color = color
        self.width = width
        self.show_attributes = show_attributes

    def paint(self, text: str, style: str) -> str:
        if not self.color or not text:
            return text
        return f"\x1b[{';'.join(_CODES[s] for s in style.split())}m{text}\x1b[0m"

    def fit(self, text: str, indent: int) -> str:
        return _cut(text, max(40, self.width - indent))

    def trace(self, trace: _Trace, incomplete: str | None, late: bool = False) -> list[str]:
        spans = trace.spans
        tops = sorted(
            (s for s in spans.values() if s.parent_span_id not in spans), key=_start_order
        )
        roots = [s for s in tops if _is_root(s, spans)]
        lines = [self.header(trace, (roots or tops)[0], incomplete, late)] if tops else []

        def note(span: Span) -> str | None:
            if span in roots:
                return None
            if late:
                return f"parent {span.parent_span_id}"
            return f"orphan: parent {span.parent_span_id} not seen"

        lines.extend(self.forest(spans, tops, note))
        # Records of a trace none of whose spans came here stand alone, with its id.
        bullet = self.paint("• ", "dim") if tops else ""
        lines.extend(bullet + self.record(r, in_trace=bool(tops)) for r in trace.records)
        if trace.skipped:
            lines.append(self.paint(f"• …and {trace.skipped} more records", "dim"))
        return lines

    def header(self, trace: _Trace, head: Span, incomplete: str | None, late: bool) -> str:
        title = self.paint("trace", "bold") + " " + self.paint(trace.trace_id, "dim")
        if late:
            return f"{title}  {self.paint('[late: ended after its trace was printed]', 'yellow')}"
        spans = trace.spans.values()
        total = head.duration_ns
        if total is None or not _is_root(head, trace.spans):
            end = max(s.end_time_unix_nano or s.start_time_unix_nano for s in spans)
            total = end - min(s.start_time_unix_nano for s in spans)
        errors = sum(1 for s in spans if s.status_code == "error")
        status = f"✗ {errors} error{'s' * (errors > 1)}" if errors else "ok"
        parts = [
            title,
            self.paint(_clean(head.name), "bold"),
            _duration(total),
            self.paint(status, "red bold" if errors else "green"),
            f"{len(spans)} span{'s' * (len(spans) > 1)}",
        ]
        fields = {k: trace.fields[k] for k in _TRACE_FIELDS if k in trace.fields}
        if fields:
            parts.append(" ".join(_pairs(fields)))
        if incomplete:
            parts.append(self.paint(f"[incomplete: {incomplete}]", "yellow"))
        return "  ".join(parts)

    def forest(
        self, spans: Mapping[str, Span], tops: Sequence[Span], note: Callable[[Span], str | None]
    ) -> list[str]:
        children: dict[str, list[Span]] = {}
        for span in spans.values():
            parent = span.parent_span_id
            if parent is not None and parent in spans and parent != span.span_id:
                children.setdefault(parent, []).append(span)
        for kids in children.values():
            kids.sort(key=_start_order)
        lines: list[str] = []
        seen: set[str] = set()
        pending = list(tops)
        while pending:
            # An explicit stack, not recursion: a trace may be deeper than Python's limit.
            stack = [(s, "", i == len(pending) - 1) for i, s in enumerate(pending)][::-1]
            while stack:
                span, prefix, last = stack.pop()
                if span.span_id in seen:
                    continue
                seen.add(span.span_id)
                kids = children.get(span.span_id, [])
                branch = self.paint(prefix + ("└─ " if last else "├─ "), "dim")
                lines.append(branch + self.span(span, None if prefix else note(span)))
                inner = prefix + ("   " if last else "│  ")
                detail = inner + ("│  " if kids else "   ")
                lines.extend(self.paint(detail, "dim") + d for d in self.details(span, len(detail)))
                stack.extend(
                    (k, inner, i == len(kids) - 1) for i, k in reversed(list(enumerate(kids)))
                )
            # Spans whose parents form a loop are reachable from no top: show them too.
            pending = sorted(
                (s for s in spans.values() if s.span_id not in seen), key=_start_order
            )[:1]
        return lines

    def span(self, span: Span, note: str | None) -> str:
        kind = "" if span.kind == "internal" else f", {span.kind}"
        parts = [
            self.paint(_clean(span.name), "bold"),
            self.paint(f"[{_clean(span.type)}{kind}]", "cyan"),
            _duration(span.duration_ns),
        ]
        usage = span.usage or {}
        model = [self.paint(_clean(span.model), "cyan")] if span.model else []
        if "input_tokens" in usage or "output_tokens" in usage:
            model.append(f"{usage.get('input_tokens', 0)}→{usage.get('output_tokens', 0)} tok")
        elif "total_tokens" in usage:
            model.append(f"{usage['total_tokens']} tok")
        if span.cost_usd is not None:
            model.append(_money(span.cost_usd))
        if model:
            parts.append(" ".join(model))
        if span.status_code == "error":
            parts.append(self.paint(f"✗ {_message(span.status_message)}", "red bold"))
        if note:
            parts.append(self.paint(f"({note})", "yellow"))
        return "  ".join(parts)

    def details(self, span: Span, indent: int) -> list[str]:
        lines: list[str] = []
        exceptions = [e for e in span.events if e.get("name") == "exception"]
        for event in exceptions[:_MAX_EXCEPTIONS]:
            attrs = event.get("attributes") or {}
            text = f"{attrs.get('exception.type', '?')}: {attrs.get('exception.message', '')}"
            # The span line already shows its status message; repeat only what it cut or lacks.
            if span.status_message != text or _message(text) != _clean(text):
                lines.append(self.paint(self.fit("! " + _clean(text), indent), "red"))
        others = [_clean(e.get("name", "?")) for e in span.events if e.get("name") != "exception"]
        if others:
            lines.append(self.paint(self.fit("events: " + ", ".join(others), indent), "dim"))
        if self.show_attributes and span.attributes:
            text = self.fit("  ".join(_pairs(span.attributes)), indent + 2)
            lines.append(self.paint("·", "dim") + " " + text)
        return lines

    def record(self, record: Any, *, in_trace: bool = False) -> str:
        kind = _clean(getattr(record, "event_type", type(record).__name__))
        words = [_LABELS.get(kind, kind), _clean(getattr(record, "name", ""))]
        if hasattr(record, "value"):
            words.append(f"= {_value(record.value)}")
        if getattr(record, "unit", ""):
            words.append(_clean(record.unit))
        extra = _pairs(getattr(record, "fields", None) or {})
        extra += _pairs(getattr(record, "attributes", None) or {})
        if getattr(record, "comment", None):
            extra.append(_value(str(record.comment)))
        ids = {
            "trace": None if in_trace else _trace_id_of(record),
            "span": getattr(record, "span_id", None),
        }
        where = [f"{k} {v}" for k, v in ids.items() if isinstance(v, str)]
        text = "  ".join([" ".join(w for w in words if w), *extra])
        text = self.fit(text, 2 + sum(len(w) + 2 for w in where))
        return "  ".join([text, *(self.paint(w, "dim") for w in where)])


class ConsoleExporter:
    """Prints finished traces as trees to ``stream`` (default: ``sys.stdout`` at write time).

    ``color=None`` colours only a TTY; ``True``/``False`` force it; a non-empty
    ``NO_COLOR`` environment variable always turns it off. ``show_attributes``
    adds a line of attributes under each span, cut to ``width`` columns.
    ``max_traces`` bounds the traces held while they wait for their root, and
    ``wait_for_root`` how many seconds one waits. Thread-safe.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        color: bool | None = None,
        show_attributes: bool = True,
        width: int = 100,
        max_traces: int = 1000,
        wait_for_root: float = 60.0,
    ) -> None:
        self._stream = stream
        self._color = color
        self._show_attributes = show_attributes
        self._width = width
        self._max_traces = max(1, max_traces)
        self._wait = wait_for_root
        self._lock = threading.Lock()
        self._traces: OrderedDict[str, _Trace] = OrderedDict()
        # Traces already printed, so a span that ends after its root is shown as late.
        self._printed: OrderedDict[str, None] = OrderedDict()
        self._stopped = False

    def export(self, records: Sequence[Any]) -> ExportResult:
        """Hold the batch's spans by trace; print every trace whose root has now arrived."""
        with self._lock:
            if self._stopped:
                return ExportResult.FAILURE
            now = time.monotonic()
            render = self._renderer()
            touched: dict[str, _Trace] = {}
            late: dict[str, _Trace] = {}
            others: list[Any] = []
            for record in records:
                if type(record) is SpanStart:
                    continue  # a running span's announce: the tree shows it once it ends
                if not isinstance(record, Span):
                    others.append(record)
                elif record.trace_id not in self._traces and record.trace_id in self._printed:
                    late.setdefault(record.trace_id, _Trace(record.trace_id, now)).add_span(record)
                else:
                    trace = touched[record.trace_id] = self._hold(record.trace_id, now)
                    trace.add_span(record)
            singles: list[str] = []
            # Other records are placed after the spans, so a score or trace update sent
            # early in the batch finds the trace its spans have just opened.
            for record in others:
                trace_id = _trace_id_of(record)
                if trace_id is not None and trace_id not in self._printed:
                    self._hold(trace_id, now).add_record(record)
                else:
                    singles.append(render.record(record))
            lines: list[str] = []
            for trace_id, trace in touched.items():
                if trace.complete():
                    lines += self._release(trace_id, render, None)
            lines += singles
            for trace in late.values():
                lines += render.trace(trace, None, late=True)
            while len(self._traces) > self._max_traces:
                lines += self._release(next(iter(self._traces)), render, "too many traces held")
            while self._traces:
                trace_id, oldest = next(iter(self._traces.items()))
                if now - oldest.first_seen < self._wait:
                    break
                lines += self._release(trace_id, render, f"no root within {self._wait:g} s")
            return self._write(lines)

    def force_flush(self, timeout: float | None = None) -> bool:
        """Print every held trace now, marked incomplete; True unless the stream failed."""
        with self._lock:
            return self._print_held("flushed before its root ended") is ExportResult.SUCCESS

    def shutdown(self) -> None:
        """Print what is still held; later exports are refused. The stream stays open."""
        with self._lock:
            if not self._stopped:
                self._print_held("shut down before its root ended")
                self._stopped = True

    # The methods below run with the lock held.

    def _hold(self, trace_id: str, now: float) -> _Trace:
        trace = self._traces.get(trace_id)
        if trace is None:
            trace = self._traces[trace_id] = _Trace(trace_id, now)
        return trace

    def _release(self, trace_id: str, render: _Renderer, incomplete: str | None) -> list[str]:
        trace = self._traces.pop(trace_id)
        self._printed[trace_id] = None
        while len(self._printed) > self._max_traces:
            self._printed.popitem(last=False)
        return render.trace(trace, incomplete)

    def _print_held(self, reason: str) -> ExportResult:
        render = self._renderer()
        lines: list[str] = []
        while self._traces:
            lines += self._release(next(iter(self._traces)), render, reason)
        return self._write(lines)

    def _target(self) -> TextIO:
        # Resolved at each write, so a replaced sys.stdout (pytest, a redirect) is honoured.
        return self._stream if self._stream is not None else sys.stdout

    def _renderer(self) -> _Renderer:
        if os.environ.get("NO_COLOR"):
            color = False
        elif self._color is not None:
            color = self._color
        else:
            try:
                color = self._target().isatty()
            except (AttributeError, OSError, ValueError):
                color = False
        return _Renderer(color=color, width=self._width, show_attributes=self._show_attributes)

    def _write(self, lines: list[str]) -> ExportResult:
        if not lines:
            return ExportResult.SUCCESS
        text = "\n".join(lines) + "\n"
        stream = self._target()
        encoding = getattr(stream, "encoding", None)
        try:
            if isinstance(encoding, str):
                try:
                    _GLYPHS.encode(encoding)
                except UnicodeEncodeError:
                    text = text.translate(_TO_ASCII)
                # Never fail a batch over one character the stream cannot show.
                text = text.encode(encoding, "replace").decode(encoding)
            stream.write(text)
            stream.flush()
        except (OSError, ValueError, LookupError):
            return ExportResult.FAILURE
        return ExportResult.SUCCESS
