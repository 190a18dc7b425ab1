"""The module-level API: ``init``, ``span``, ``current_span``, ``score``, ``event``, ``flush``…

One process-wide ``Client`` lives in ``STATE``; until ``init()`` installs one,
every call here is a cheap no-op that returns a ``NonRecordingSpan`` or None,
so instrumented libraries run unchanged without tracerelay configured.
After ``os.fork`` the child replaces the inherited client with a fresh one
built from the same arguments; records queued in the parent stay the parent's.

``init(asyncio=True)`` installs an ``AsyncClient`` instead (its pipeline drains
on the event loop). The functions here stay synchronous: ``flush()`` and
``shutdown()`` then drain inline and wait in the calling thread, which is right
at exit and in threads; inside a coroutine, ``await client.flush()`` instead.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from tracerelay._diagnostics import internal_error
from tracerelay.client import Client
from tracerelay.records import Event, MetricPoint, Score, TraceUpdate
from tracerelay.spans import CURRENT, INVALID_SPAN, NonRecordingSpan, StatusCode
from tracerelay.tracer import USE_CURRENT, Tracer

if TYPE_CHECKING:
    from tracerelay.async_client import AsyncClient

__all__ = [
    "STATE",
    "add_event",
    "current_span",
    "event",
    "flush",
    "get_client",
    "init",
    "metric",
    "record_exception",
    "record_usage",
    "score",
    "set_attribute",
    "set_attributes",
    "set_status",
    "shutdown",
    "span",
    "update_trace",
]


class _State:
    """The installed client and its tracer (None until ``init()``)."""

    __slots__ = ("atexit_registered", "client", "tracer")

    def __init__(self) -> None:
        self.client: Client | AsyncClient | None = None
        self.tracer: Tracer | None = None
        self.atexit_registered = False


STATE = _State()


@overload
def init(*, asyncio: Literal[False] = False, **options: Any) -> Client: ...


@overload
def init(*, asyncio: Literal[True], **options: Any) -> AsyncClient: ...


@overload
def init(*, asyncio: bool, **options: Any) -> Client | AsyncClient: ...


def init(*, asyncio: bool = False, **options: Any) -> Client | AsyncClient:
    """Configure tracing for this process and return its client.

    Takes every option of ``docs/configuration.md`` as a keyword (argument >
    ``TRACERELAY_*`` environment variable > default), plus ``exporters``,
    ``processors`` and ``synchronous`` (see ``Client``). ``asyncio=True``
    builds an ``AsyncClient`` (for asyncio apps: its pipeline drains on the
    event loop). Calling it again replaces the previous client after flushing
    it. A bad option raises ``ConfigError`` here, the one place tracerelay
    raises into the application.
    """
    client: Client | AsyncClient
    if asyncio:
        from tracerelay.async_client import AsyncClient

        client = AsyncClient(**options)
    else:
        client = Client(**options)
    previous = STATE.client
    _install(client)
    if previous is not None:
        previous._shutdown_now()
    if not STATE.atexit_registered:
        atexit.register(_shutdown_at_exit)
        STATE.atexit_registered = True
    return client


def _install(client: Client | AsyncClient | None) -> None:
    STATE.client = client
    STATE.tracer = client.tracer if client is not None and client.config.enabled else None


def get_client() -> Client | AsyncClient | None:
    """The client installed by ``init()``, or None."""
    return STATE.client


def _shutdown_at_exit() -> None:
    client = STATE.client
    if client is not None:
        try:
            client._shutdown_now()
        except Exception as exc:
            internal_error("atexit", exc)


def shutdown(timeout: float | None = None) -> bool:
    """Flush and stop tracing; later calls are no-ops until the next ``init()``.

    Blocks the calling thread, also for an ``AsyncClient`` (in a coroutine,
    ``await client.shutdown()`` then ``tracerelay.shutdown()`` keeps the loop free).
    """
    client = STATE.client
    _install(None)
    if client is None:
        return True
    return client._shutdown_now(timeout)


def flush(timeout: float | None = 5.0) -> bool:
    """Export everything recorded so far; True once it all left within ``timeout``.

    Blocks the calling thread, also for an ``AsyncClient``; in a coroutine use
    ``await client.flush()``, which keeps the loop running.
    """
    client = STATE.client
    if client is None:
        return True
    try:
        return client._flush_now(timeout)
    except Exception as exc:
        internal_error("flush", exc)
        return False


def span(
    name: str,
    *,
    kind: str = "internal",
    type: str = "span",
    attributes: Mapping[str, Any] | None = None,
    parent: NonRecordingSpan | None = USE_CURRENT,
) -> NonRecordingSpan:
    """A new span, current inside ``with``/``async with``; ``parent=None`` starts a new trace.

    Outside a ``with`` block, call ``.end()`` yourself.
    """
    tracer = STATE.tracer
    if tracer is None:
        return INVALID_SPAN
    try:
        return tracer.start_span(name, kind, type, attributes, parent)
    except Exception as exc:
        internal_error("span", exc)
        return INVALID_SPAN


def current_span() -> NonRecordingSpan:
    """The span of this context; a non-recording span (all no-ops) when there is none."""
    current = CURRENT.get()
    return INVALID_SPAN if current is None else current


def set_attribute(key: str, value: Any) -> None:
    """Set an attribute on the current span."""
    current = CURRENT.get()
    if current is not None:
        current.set_attribute(key, value)


def set_attributes(attributes: Mapping[str, Any]) -> None:
    """Set several attributes on the current span."""
    current = CURRENT.get()
    if current is not None:
        current.set_attributes(attributes)


def add_event(name: str, attributes: Mapping[str, Any] | None = None) -> None:
    """Add a timed event to the current span."""
    current = CURRENT.get()
    if current is not None:
        current.add_event(name, attributes)


def record_exception(exception: BaseException, attributes: Mapping[str, Any] | None = None) -> None:
    """Record an exception on the current span and mark it as an error."""
    current = CURRENT.get()
    if current is not None:
        current.record_exception(exception, attributes)


def set_status(code: StatusCode, message: str = "") -> None:
    """Set the current span's status."""
    current = CURRENT.get()
    if current is not None:
        current.set_status(code, message)


def record_usage(
    model: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    total_tokens: int | None = None,
    cost_usd: float | None = None,
) -> None:
    """Record model usage on the current span (which becomes a ``generation``)."""
    current = CURRENT.get()
    if current is not None:
        current.record_usage(model, input_tokens, output_tokens, total_tokens, cost_usd)


def _ids(trace_id: str | None, span_id: str | None) -> tuple[str | None, str | None]:
    current = CURRENT.get()
    if trace_id is None and current is not None:
        return current.trace_id, span_id if span_id is not None else current.span_id
    return trace_id, span_id


def _submit(record: Any) -> str | None:
    client = STATE.client
    if client is None or STATE.tracer is None:
        return None
    try:
        return client.submit(record)
    except Exception as exc:
        internal_error("submit", exc)
        return None


def score(
    name: str,
    value: float | str | bool,
    *,
    trace_id: str | None = None,
    span_id: str | None = None,
    comment: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> str | None:
    """Record a quality score on a trace (default: the current one) or one span.

    Returns the score's event id, or None when tracing is off.
    """
    if STATE.tracer is None:
        return None
    trace_id, span_id = _ids(trace_id, span_id)
    return _submit(
        Score(
            name, value, trace_id=trace_id, span_id=span_id, comment=comment, attributes=attributes
        )
    )


def event(name: str, attributes: Mapping[str, Any] | None = None) -> str | None:
    """Record a generic event (linked to the current span, if any); returns its event id."""
    if STATE.tracer is None:
        return None
    trace_id, span_id = _ids(None, None)
    return _submit(Event(name, attributes, trace_id=trace_id, span_id=span_id))


def metric(
    name: str,
    value: float,
    *,
    kind: str = "gauge",
    unit: str = "",
    attributes: Mapping[str, Any] | None = None,
) -> str | None:
    """Record one metric point (``gauge``, ``counter`` or ``histogram``); returns its event id."""
    if STATE.tracer is None:
        return None
    return _submit(MetricPoint(name, value, kind=kind, unit=unit, attributes=attributes))


def update_trace(
    *,
    trace_id: str | None = None,
    name: str | None = None,
    user_id: str | None = None,
    session_id: str | None = None,
    tags: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    release: str | None = None,
    environment: str | None = None,
) -> str | None:
    """Set trace-level fields on a trace (default: the current one); returns the event id."""
    if STATE.tracer is None:
        return None
    trace_id = trace_id or _ids(None, None)[0]
    if trace_id is None:
        return None
    given = {
        "name": name,
        "user_id": user_id,
        "session_id": session_id,
        "tags": list(tags) if tags is not None else None,
        "metadata": dict(metadata) if metadata is not None else None,
        "release": release,
        "environment": environment,
    }
    return _submit(TraceUpdate(trace_id, {k: v for k, v in given.items() if v is not None}))


def _after_fork_in_child() -> None:
    client = STATE.client
    if client is None:
        return
    client.pipeline.abandon()
    try:
        _install(type(client)(**client._arguments))
    except Exception as exc:
        _install(None)
        internal_error("fork", exc)


os.register_at_fork(after_in_child=_after_fork_in_child)
