"""What a write carries (``WriteBatch``), and span/trace states ↔ table rows.

Shared by every store: the ingest path builds ``WriteBatch``es from validated
events; a store merges them into its rows (``storage/merge.py``) and reports
which events it already held (``WriteResult.duplicates``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from tracerelay.server.storage.merge import (
    TRACE_FIELDS,
    Registers,
    SpanState,
    event_key,
    link_key,
    union,
)

if TYPE_CHECKING:
    from tracerelay.server.ingest.schema import Observation

__all__ = [
    "SPAN_COLUMNS",
    "RecordRow",
    "SpanWrite",
    "TraceWrite",
    "Work",
    "WriteBatch",
    "WriteResult",
    "by_project",
    "fold",
    "fold_span",
    "fold_trace",
    "observation_row",
    "pending_row",
    "pending_state",
    "span_row",
    "span_state_of_row",
    "trace_body",
    "trace_state_of_body",
]

SPAN_COLUMNS = (
    "project_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "service",
    "start_ns",
    "end_ns",
    "sequence",
    "status_code",
    "model",
    "versions",
    "body",
)
"""A ``spans`` row: the fields queries filter, group or join on get columns, and ``body``
is the whole span as ``GET /v1/traces/{id}`` returns it (SPEC §1's names) but for its
trace id, so a read sends each body as stored (``api/traces.py``): the span id, parent,
name, service, start, end, duration_ms, sequence and model (also columns), kind, type,
status, attributes, events and links always; input, output, usage, trace_state, scope,
cost_usd and environment when set. ``versions`` is the merge's bookkeeping
(``{"v": base, "o": overrides}``, merge.py). Few columns on purpose: each costs SQLite
~1 µs a row to insert."""
# Registers kept in the body only when set.
_OPTIONAL_FIELDS = ("input", "output", "usage", "trace_state", "scope", "cost_usd", "environment")


@dataclass(slots=True)
class SpanWrite:
    """One observation event for a span: the row it makes on its own, and its event id.

    Most spans are told in one event and stored as that row unchanged; only when
    a second event about the span meets it (in the same write, or stored) is the
    row read back into a ``SpanState`` and merged."""

    trace_id: str
    span_id: str
    row: tuple[Any, ...]
    event_id: str

    def state(self) -> SpanState:
        """The registers of this event alone."""
        return span_state_of_row(dict(zip(SPAN_COLUMNS, self.row, strict=True)))


@dataclass(slots=True)
class TraceWrite:
    """One ``trace_create`` / ``trace_update`` event."""

    trace_id: str
    state: Registers
    event_id: str


@dataclass(slots=True)
class RecordRow:
    """A score, metric or generic event: stored once per event id."""

    event_id: str
    event_type: str
    trace_id: str | None
    span_id: str | None
    name: str | None
    time_ns: int
    body: dict[str, Any]


@dataclass(slots=True)
class WriteBatch:
    """Everything one request asks to store, for one project."""

    project_id: str
    spans: list[SpanWrite] = field(default_factory=list)
    traces: list[TraceWrite] = field(default_factory=list)
    records: list[RecordRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.spans) + len(self.traces) + len(self.records)


@dataclass(slots=True)
class WriteResult:
    """What storing a ``WriteBatch`` found: the event ids already stored before."""

    duplicates: set[str] = field(default_factory=set)


def observation_row(
    project_id: str, obs: Observation, version: str, service: Any, environment: Any
) -> tuple[Any, ...]:
    """The ``spans`` row one observation event makes on its own (``SPAN_COLUMNS`` order).

    The same row as ``span_row`` of that event's ``SpanState``, built in one step:
    an unset status, an empty name or trace state and empty usage carry nothing
    (SPEC §2: events never unset a field), events and links are sets."""
    status = obs.status
    code = status["code"] if status else "unset"
    message = str(status.get("message") or "") if status and code != "unset" else ""
    start, end = obs.start_time_unix_nano, obs.end_time_unix_nano
    body: dict[str, Any] = {
        "span_id": obs.span_id,
        "parent_span_id": obs.parent_span_id,
        "name": obs.name or None,
        "service": service,
        "start_time_unix_nano": start,
        "end_time_unix_nano": end,
        "duration_ms": (end - start) / 1e6 if start is not None and end is not None else None,
        "sequence": obs.sequence,
        "model": obs.model,
        "kind": obs.kind,
        "type": obs.type,
        "status": {"code": code, "message": message},
        "attributes": obs.attributes or {},
        "events": union([], obs.events, event_key) if obs.events else [],
        "links": union([], obs.links, link_key) if obs.links else [],
    }
    if obs.input is not None:
        body["input"] = obs.input
    if obs.output is not None:
        body["output"] = obs.output
    if obs.usage:
        body["usage"] = obs.usage
    if obs.trace_state:
        body["trace_state"] = obs.trace_state
    if obs.scope is not None:
        body["scope"] = obs.scope
    if obs.cost_usd is not None:
        body["cost_usd"] = obs.cost_usd
    if environment is not None:
        body["environment"] = environment
    return (
        project_id,
        obs.trace_id,
        obs.span_id,
        obs.parent_span_id,
        obs.name or None,
        service,
        start,
        end,
        obs.sequence,
        code,
        obs.model,
        '{"v":"%s"}' % version,  # noqa: UP031 - a version is digits, ":" and a ULID
        orjson.dumps(body).decode(),
    )


def span_row(project_id: str, trace_id: str, span_id: str, state: SpanState) -> tuple[Any, ...]:
    """The ``spans`` row (in ``SPAN_COLUMNS`` order) of a merged state."""
    v = state.values
    status = v.get("status")
    code = status[0] if status else "unset"
    start, end = v.get("start_ns"), v.get("end_ns")
    body: dict[str, Any] = {
        "span_id": span_id,
        "parent_span_id": v.get("parent_span_id"),
        "name": v.get("name"),
        "service": v.get("service"),
        "start_time_unix_nano": start,
        "end_time_unix_nano": end,
        "duration_ms": (end - start) / 1e6 if start is not None and end is not None else None,
        "sequence": v.get("sequence"),
        "model": v.get("model"),
        "kind": v.get("kind"),
        "type": v.get("type"),
        "status": {"code": code, "message": status[1] if status else ""},
        "attributes": state.attributes,
        "events": state.events,
        "links": state.links,
    }
    for name in _OPTIONAL_FIELDS:
        if v.get(name) is not None:
            body[name] = v[name]
    versions: dict[str, Any] = {"v": state.base}
    if state.overrides:
        versions["o"] = state.overrides
    return (
        project_id,
        trace_id,
        span_id,
        v.get("parent_span_id"),
        v.get("name"),
        v.get("service"),
        start,
        end,
        v.get("sequence"),
        code,
        v.get("model"),
        orjson.dumps(versions).decode(),
        orjson.dumps(body).decode(),
    )


def span_state_of_row(row: dict[str, Any]) -> SpanState:
    """The state a stored ``spans`` row holds (``row``: column → value)."""
    body = _json(row["body"])
    versions = _json(row["versions"])
    code = row.get("status_code")
    message = (body.get("status") or {}).get("message") or ""
    values: dict[str, Any] = {
        "parent_span_id": row.get("parent_span_id"),
        "name": row.get("name"),
        "kind": body.get("kind"),
        "type": body.get("type"),
        "start_ns": row.get("start_ns"),
        "end_ns": row.get("end_ns"),
        "status": None if code in (None, "unset") else (code, message),
        "model": row.get("model"),
        "sequence": row.get("sequence"),
        "service": row.get("service"),
    }
    for name in _OPTIONAL_FIELDS:
        values[name] = body.get(name)
    return SpanState(
        values,
        body.get("attributes") or {},
        versions["v"],
        versions.get("o") or {},
        body.get("events") or [],
        body.get("links") or [],
    )


def _json(value: Any) -> Any:
    """A JSON column's value: text from SQLite, already decoded from PostgreSQL's jsonb."""
    return orjson.loads(value) if isinstance(value, (str, bytes)) else value


def trace_body(state: Registers) -> str:
    """The JSON body of a trace row's event-set fields, with their versions."""
    body: dict[str, Any] = {
        name: state.values[name] for name in TRACE_FIELDS if state.values.get(name) is not None
    }
    body["attributes"] = state.attributes
    body["v"] = state.base
    if state.overrides:
        body["o"] = state.overrides
    return orjson.dumps(body).decode()


def trace_state_of_body(body: Any) -> Registers:
    """The registers a trace row's body holds."""
    data = _json(body)
    values = {name: data.get(name) for name in TRACE_FIELDS}
    return Registers(values, data.get("attributes") or {}, data["v"], data.get("o") or {})


Work = list[tuple[WriteBatch, WriteResult]]
"""A project's share of a write group: each batch with the result it is answered with."""


def by_project(batches: Sequence[WriteBatch], results: Sequence[WriteResult]) -> dict[str, Work]:
    """A write group's batches, with their results, per project: stores write a project
    at a time."""
    work: dict[str, Work] = {}
    for batch, result in zip(batches, results, strict=True):
        work.setdefault(batch.project_id, []).append((batch, result))
    return work


def fold(work: Work) -> tuple[dict[tuple[str, str], SpanWrite | SpanState], dict[str, Registers]]:
    """Every span event of ``work`` merged per (trace id, span id), and every trace event
    per trace id; repeats within the group are noted in their batch's result."""
    spans: dict[tuple[str, str], SpanWrite | SpanState] = {}
    traces: dict[str, Registers] = {}
    for batch, result in work:
        for write in batch.spans:
            fold_span(spans, write, result)
        for trace in batch.traces:
            fold_trace(traces, trace, result)
    return spans, traces


def fold_span(
    spans: dict[tuple[str, str], SpanWrite | SpanState], write: SpanWrite, result: WriteResult
) -> None:
    """Merge one span event into what a write group holds for its span; a repeat is
    noted. A span's first event is kept as its row; a second turns it into a state."""
    key = (write.trace_id, write.span_id)
    current = spans.get(key)
    if current is None:
        spans[key] = write
        return
    if isinstance(current, SpanWrite):
        current = spans[key] = current.state()
    incoming = write.state()
    if current.knows(incoming.base):
        result.duplicates.add(write.event_id)
    else:
        current.merge(incoming)


def pending_state(pending: SpanWrite | SpanState) -> SpanState:
    """The state of what a write group holds for a span."""
    return pending.state() if isinstance(pending, SpanWrite) else pending


def pending_row(
    project_id: str, trace_id: str, span_id: str, pending: SpanWrite | SpanState
) -> tuple[Any, ...]:
    """The row of what a write group holds for a span (a lone event's row as it came)."""
    if isinstance(pending, SpanWrite):
        return pending.row
    return span_row(project_id, trace_id, span_id, pending)


def fold_trace(traces: dict[str, Registers], write: TraceWrite, result: WriteResult) -> None:
    """Merge one trace event into the states of a write group; a repeat is noted."""
    current = traces.get(write.trace_id)
    if current is None:
        traces[write.trace_id] = write.state
    elif current.knows(write.state.base):
        result.duplicates.add(write.event_id)
    else:
        current.merge(write.state)
