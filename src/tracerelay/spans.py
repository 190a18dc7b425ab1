"""Spans: the live object traced code talks to, which becomes the record once it ends.

A ``Span`` is created by the tracer, made current through a ``ContextVar`` while
its block runs, and handed (without copying) to the pipeline when it ends;
after ``end()`` every mutator is ignored, so the pipeline can read it from
another thread safely. ``NonRecordingSpan`` stands in wherever nothing is
recorded — no ``init()``, an unsampled trace, a remote parent taken from
``traceparent`` — and has the same methods, all doing nothing, so traced code
never needs to ask which one it holds.

Timestamps are wall-clock nanoseconds taken from the monotonic clock plus an
offset fixed at import and resynchronised by the pipeline, so durations are
exact and one clock read suffices per timestamp.
"""

from __future__ import annotations

import itertools
import time
import traceback
from collections.abc import Mapping, Sequence
from contextvars import ContextVar, Token
from operator import attrgetter
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from tracerelay._diagnostics import internal_error
from tracerelay.ids import INVALID_SPAN_ID, INVALID_TRACE_ID

if TYPE_CHECKING:
    from tracerelay.tracer import Tracer

__all__ = [
    "CURRENT",
    "INVALID_SPAN",
    "SPAN_KINDS",
    "SPAN_TYPES",
    "NonRecordingSpan",
    "Span",
    "StatusCode",
    "now_ns",
    "resync_clock",
]

StatusCode = Literal["unset", "ok", "error"]
SPAN_KINDS = frozenset({"internal", "server", "client", "producer", "consumer"})
SPAN_TYPES = frozenset(
    {
        "span",
        "generation",
        "tool",
        "agent",
        "retrieval",
        "event",
        "chain",
        "embedding",
        "evaluator",
        "guardrail",
        "reranker",
    }
)

CURRENT: ContextVar[NonRecordingSpan | None] = ContextVar("tracerelay_current_span", default=None)

_perf_ns = time.perf_counter_ns
_offset_ns = time.time_ns() - _perf_ns()
_next_sequence = itertools.count(1).__next__
# Mutable values are copied when set, so later changes by the caller cannot alter a record.
_MUTABLE = (list, dict, set, bytearray)


def now_ns() -> int:
    """Current wall-clock time in Unix nanoseconds, on the spans' clock."""
    return _perf_ns() + _offset_ns


def resync_clock() -> None:
    """Re-align the spans' clock with the wall clock (called from the pipeline thread)."""
    global _offset_ns
    _offset_ns = time.time_ns() - _perf_ns()


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, set)):
        return tuple(value)
    if isinstance(value, dict):
        return dict(value)
    return bytes(value)


def _exception_attributes(exc: BaseException) -> dict[str, Any]:
    cls = type(exc)
    module = cls.__module__
    name = (
        cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
    )
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {cls.__name__}>"
    try:
        stack = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    except Exception:
        stack = ""
    return {"exception.type": name, "exception.message": message, "exception.stacktrace": stack}


class NonRecordingSpan:
    """A span that carries ids for context and propagation but records nothing.

    Entering it with ``with`` makes it current, so spans started inside join its
    trace: that is how a remote parent from ``extract()`` and an unsampled trace
    reach their children. The all-zero ``INVALID_SPAN`` is the no-op returned
    when tracing is off; entering it changes nothing.
    """

    __slots__ = ("_token", "parent_span_id", "sampled", "span_id", "trace_id", "trace_state")

    def __init__(
        self,
        trace_id: str,
        span_id: str,
        *,
        sampled: bool = False,
        trace_state: str = "",
        parent_span_id: str | None = None,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.sampled = sampled
        self.trace_state = trace_state
        self._token: Token[NonRecordingSpan | None] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} trace_id={self.trace_id} span_id={self.span_id}>"

    def is_recording(self) -> bool:
        """True when this span records (it is a ``Span``, not yet ended)."""
        return False

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute (ignored: this span records nothing)."""

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set several attributes (ignored: this span records nothing)."""

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        """Add a timed event (ignored: this span records nothing)."""

    def record_exception(
        self, exception: BaseException, attributes: Mapping[str, Any] | None = None
    ) -> None:
        """Record an exception (ignored: this span records nothing)."""

    def set_status(self, code: StatusCode, message: str = "") -> None:
        """Set the status (ignored: this span records nothing)."""

    def record_usage(
        self,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        total_tokens: int | None = None,
        cost_usd: float | None = None,
    ) -> None:
        """Record model usage (ignored: this span records nothing)."""

    def set_input(self, value: Any) -> None:
        """Record the input (ignored: this span records nothing)."""

    def set_output(self, value: Any) -> None:
        """Record the output (ignored: this span records nothing)."""

    def update_name(self, name: str) -> None:
        """Rename the span (ignored: this span records nothing)."""

    def add_link(
        self, trace_id: str, span_id: str, attributes: Mapping[str, Any] | None = None
    ) -> None:
        """Link another span (ignored: this span records nothing)."""

    def end(self, end_time_unix_nano: int | None = None) -> None:
        """End the span (nothing to do: this span records nothing)."""

    def __enter__(self) -> NonRecordingSpan:
        if self.trace_id is not INVALID_TRACE_ID:
            self._token = CURRENT.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._detach()

    async def __aenter__(self) -> NonRecordingSpan:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _detach(self) -> None:
        token = self._token
        if token is not None:
            self._token = None
            try:
                CURRENT.reset(token)
            except ValueError:
                # Exited in another context than it was entered (a span handed between
                # tasks): that context is gone already, so there is nothing to restore.
                pass


INVALID_SPAN = NonRecordingSpan(INVALID_TRACE_ID, INVALID_SPAN_ID)


class Span(NonRecordingSpan):
    """A recording span. Use it as a (sync or async) context manager, or call ``end()``.

    Read-only once ended: late calls to its mutators are ignored, so a span
    handed to exporters never changes under them.
    """

    __slots__ = (
        "_events",
        "_links",
        "_tracer",
        "attributes",
        "cost_usd",
        "end_time_unix_nano",
        "event_id",
        "input",
        "kind",
        "model",
        "name",
        "output",
        "sequence",
        "start_time_unix_nano",
        "status_code",
        "status_message",
        "type",
        "usage",
    )

    event_type = "observation_create"

    def __init__(
        self,
        tracer: Tracer,
        name: str,
        trace_id: str,
        span_id: str,
        parent_span_id: str | None,
        kind: str,
        type: str,
        attributes: Mapping[str, Any] | None,
        trace_state: str = "",
    ) -> None:
        self.start_time_unix_nano = _perf_ns() + _offset_ns
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.sampled = True
        self.trace_state = trace_state
        self._token = None
        self._tracer = tracer
        self.name = name
        self.kind = kind
        self.type = type
        self.attributes: dict[str, Any] = dict(attributes) if attributes else {}
        self.end_time_unix_nano: int | None = None
        self.status_code: StatusCode = "unset"
        self.status_message = ""
        self._events: list[dict[str, Any]] | None = None
        self._links: list[dict[str, Any]] | None = None
        self.input: Any = None
        self.output: Any = None
        self.model: str | None = None
        self.usage: dict[str, int] | None = None
        self.cost_usd: float | None = None
        self.sequence = _next_sequence()
        self.event_id: str | None = None

    def __repr__(self) -> str:
        return (
            f"<Span {self.name!r} trace_id={self.trace_id} span_id={self.span_id} "
            f"parent={self.parent_span_id} status={self.status_code}>"
        )

    # -- reading ------------------------------------------------------------------

    @property
    def status(self) -> dict[str, str]:
        """``{"code": "unset" | "ok" | "error", "message": str}``."""
        return {"code": self.status_code, "message": self.status_message}

    @property
    def events(self) -> Sequence[dict[str, Any]]:
        """Timed events, exceptions among them (``name``, ``time_unix_nano``, ``attributes``)."""
        return self._events or ()

    @property
    def links(self) -> Sequence[dict[str, Any]]:
        """Links to other spans (``trace_id``, ``span_id``, ``attributes``)."""
        return self._links or ()

    @property
    def duration_ns(self) -> int | None:
        """End minus start, or None while running."""
        end = self.end_time_unix_nano
        return None if end is None else end - self.start_time_unix_nano

    @property
    def ended(self) -> bool:
        """True once ``end()`` ran."""
        return self.end_time_unix_nano is not None

    def is_recording(self) -> bool:
        """True until the span ends."""
        return self.end_time_unix_nano is None

    # -- writing ------------------------------------------------------------------

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute: a scalar or a list of scalars; anything else is made safe later."""
        if self.end_time_unix_nano is None:
            if isinstance(value, _MUTABLE):
                value = _freeze(value)
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set several attributes at once."""
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        """Add a timed event; ``timestamp`` in Unix nanoseconds, default now."""
        if self.end_time_unix_nano is not None:
            return
        event = {
            "name": name,
            "time_unix_nano": now_ns() if timestamp is None else timestamp,
            "attributes": dict(attributes) if attributes else {},
        }
        if self._events is None:
            self._events = [event]
        else:
            self._events.append(event)

    def record_exception(
        self, exception: BaseException, attributes: Mapping[str, Any] | None = None
    ) -> None:
        """Record ``exception`` OTel-style and set the status to error."""
        if self.end_time_unix_nano is not None:
            return
        attrs = _exception_attributes(exception)
        if attributes:
            attrs.update(attributes)
        self.add_event("exception", attrs)
        self.status_code = "error"
        self.status_message = f"{attrs['exception.type']}: {attrs['exception.message']}"

    def set_status(self, code: StatusCode, message: str = "") -> None:
        """Set the status: ``"ok"``, ``"error"`` (with a message) or ``"unset"``."""
        if self.end_time_unix_nano is None:
            if code not in ("unset", "ok", "error"):
                internal_error("span.set_status", ValueError(f"unknown status code {code!r}"))
                return
            self.status_code = code
            self.status_message = message if code == "error" else ""

    def record_usage(
        self,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        total_tokens: int | None = None,
        cost_usd: float | None = None,
    ) -> None:
        """Record a model call's usage; marks a plain ``span`` as a ``generation``."""
        if self.end_time_unix_nano is not None:
            return
        if model is not None:
            self.model = model
        usage = dict(self.usage) if self.usage else {}
        if input_tokens is not None:
            usage["input_tokens"] = usage.get("input_tokens", 0) + int(input_tokens)
        if output_tokens is not None:
            usage["output_tokens"] = usage.get("output_tokens", 0) + int(output_tokens)
        if total_tokens is not None:
            usage["total_tokens"] = int(total_tokens)
        elif input_tokens is not None or output_tokens is not None:
            usage["total_tokens"] = usage.get("input_tokens", 0) + usage.get("output_tokens", 0)
        self.usage = usage or None
        if cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + float(cost_usd)
        if self.type == "span":
            self.type = "generation"

    def set_input(self, value: Any) -> None:
        """Record the input (kept within ``max_io_length``)."""
        if self.end_time_unix_nano is None:
            self.input = self._tracer.capture(value)

    def set_output(self, value: Any) -> None:
        """Record the output (kept within ``max_io_length``)."""
        if self.end_time_unix_nano is None:
            self.output = self._tracer.capture(value)

    def update_name(self, name: str) -> None:
        """Rename the span while it runs."""
        if self.end_time_unix_nano is None:
            self.name = name

    def add_link(
        self, trace_id: str, span_id: str, attributes: Mapping[str, Any] | None = None
    ) -> None:
        """Link another span, e.g. the trace that enqueued this work."""
        if self.end_time_unix_nano is not None:
            return
        link = {"trace_id": trace_id, "span_id": span_id, "attributes": dict(attributes or {})}
        if self._links is None:
            self._links = [link]
        else:
            self._links.append(link)

    def end(self, end_time_unix_nano: int | None = None) -> None:
        """End the span and hand it to the pipeline; later calls do nothing."""
        if self.end_time_unix_nano is not None:
            return
        self.end_time_unix_nano = (
            _perf_ns() + _offset_ns if end_time_unix_nano is None else end_time_unix_nano
        )
        try:
            self._tracer.finish(self)
        except Exception as exc:
            internal_error("span.end", exc)

    # -- context manager ------------------------------------------------------------

    def __enter__(self) -> Span:
        self._token = CURRENT.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._detach()
        if exc is not None and exc_type is not GeneratorExit:
            try:
                self.record_exception(exc)
            except Exception as err:
                internal_error("span.record_exception", err)
        self.end()

    async def __aenter__(self) -> Span:
        return self.__enter__()

    # -- wire form ------------------------------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        """The span as the ``payload`` of an ``observation_create`` event (SPEC §2)."""
        payload: dict[str, Any] = {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "name": self.name,
            "kind": self.kind,
            "type": self.type,
            "start_time_unix_nano": self.start_time_unix_nano,
            "end_time_unix_nano": self.end_time_unix_nano,
            "status": {"code": self.status_code, "message": self.status_message},
            "attributes": self.attributes,
            "sequence": self.sequence,
        }
        if self._events:
            payload["events"] = self._events
        if self._links:
            payload["links"] = self._links
        if self.input is not None:
            payload["input"] = self.input
        if self.output is not None:
            payload["output"] = self.output
        if self.model is not None:
            payload["model"] = self.model
        if self.usage is not None:
            payload["usage"] = self.usage
        if self.cost_usd is not None:
            payload["cost_usd"] = self.cost_usd
        if self.trace_state:
            payload["trace_state"] = self.trace_state
        return payload

    def state(self) -> tuple[Any, ...]:
        """The span's fields as a tuple, to park it on disk (``tracerelay.overflow``)."""
        return _state_of(self)

    @classmethod
    def from_state(cls, state: Sequence[Any]) -> Span:
        """The span ``state()`` described, rebuilt (ended: no tracer, no context token)."""
        if len(state) != len(_STATE_FIELDS):
            raise ValueError(f"a span state has {len(_STATE_FIELDS)} fields, not {len(state)}")
        span = cls.__new__(cls)
        _restore(span, state)
        return span

    @property
    def timestamp(self) -> float:
        """Unix seconds of the record: the end time, or the start while running."""
        end = self.end_time_unix_nano
        return (self.start_time_unix_nano if end is None else end) / 1e9


# What ``Span.state`` holds: every field but the tracer and the context token, which
# mean nothing once the span has ended.
_STATE_FIELDS = tuple(
    sorted({*Span.__slots__, *NonRecordingSpan.__slots__} - {"_tracer", "_token"})
)
_state_of = attrgetter(*_STATE_FIELDS)


def _make_restore() -> Any:
    """``restore(span, state)``, one assignment per field written out (as dataclasses
    generate ``__init__``): 3× faster than a loop over the slots' descriptors, and
    parked spans are rebuilt by the hundred thousand under overload."""
    lines = [f"    span.{name} = state[{i}]" for i, name in enumerate(_STATE_FIELDS)]
    source = "def restore(span, state):\n" + "\n".join(lines)
    source += "\n    span._tracer = None\n    span._token = None\n"
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # the names are this module's own slot names
    return namespace["restore"]


_restore = _make_restore()
