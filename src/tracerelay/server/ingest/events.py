"""SPEC §2 events checked one by one and turned into what a store writes.

Each event is checked on its own: a bad one becomes an error entry with the
path to the bad field (``payload.trace_id: expected 32 lowercase hex
characters``) and ``retryable: false``, and the others are stored. Nothing
here raises for bad input but ``EnvelopeError`` (the body is not a batch at
all, answered 400) and ``BodyError`` (not JSON).

Two paths, one outcome:

- ``read_batch`` decodes a batch body with msgspec into ``schema.py``'s types:
  types, patterns and bounds are checked in C while parsing, and an
  observation becomes its ``spans`` row directly (``observation_row``). This
  is the path nearly every span takes.
- An event those types refuse — and every event of a body whose envelope they
  refuse — goes through the checks below, field by field, which find the path
  and the reason for the error entry (``parse_events``, also used for the
  stream upload). An observation they pass is still converted into the same
  ``Observation``, so what is accepted, and the row it makes, is decided in
  one place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from tracerelay.records import EVENT_TYPES
from tracerelay.server.ingest.body import load_json
from tracerelay.server.ingest.schema import BATCH, OBSERVATION, SPAN_BATCH, Observation, SpanBatch
from tracerelay.server.storage.merge import trace_state, version_of
from tracerelay.server.storage.rows import (
    RecordRow,
    SpanWrite,
    TraceWrite,
    WriteBatch,
    observation_row,
)

__all__ = [
    "TRACE_ID",
    "BatchBody",
    "EnvelopeError",
    "Parsed",
    "coherent",
    "decode_observation",
    "observation_write",
    "parse_events",
    "read_batch",
]

_OBSERVATION = frozenset({"observation_create", "observation_update", "observation_complete"})
_TRACE = frozenset({"trace_create", "trace_update"})
_ULID = re.compile(r"[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}")
TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_KINDS = frozenset({"internal", "server", "client", "producer", "consumer"})
_STATUS = frozenset({"unset", "ok", "error"})
_MAX_NS = 1 << 63
_HEX = "0123456789abcdef"
_ZEROS_32, _ZEROS_16 = "0" * 32, "0" * 16
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghjkmnpqrstvwxyz"


class EnvelopeError(Exception):
    """The body is not a batch (400): no event could even be looked at."""


@dataclass(slots=True)
class Parsed:
    """The events of one request: what to write, and what was refused."""

    batch: WriteBatch
    event_ids: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class BatchBody:
    """A batch body read: its events checked — or, with ``async_mode``, only counted,
    to be checked by the jobs worker (``parsed`` None)."""

    parsed: Parsed | None
    events: int
    dedup: dict[str, Any]


def read_batch(raw: bytes, project_id: str, *, defer_async: bool = True) -> BatchBody:
    """A decompressed ``POST /v1/telemetry/batch`` body, read and checked — only
    counted when it asks for ``async_mode`` and ``defer_async`` (the request; the
    jobs worker reads it with ``defer_async=False``).

    Three ways, fastest first: a batch of observation events only, every one of them
    acceptable, is decoded in one pass (``SpanBatch``); any other batch that parses
    is decoded with raw payloads, each then decoded by its event type; a body the
    schema refuses is read field by field, to say what is wrong where."""
    try:
        spans_only = SPAN_BATCH.decode(raw)
    except msgspec.DecodeError:
        pass
    else:
        read = _read_spans(spans_only, project_id, defer_async)
        if read is not None:
            return read
    try:
        envelope = BATCH.decode(raw)
    except msgspec.DecodeError:
        return _read_batch_slowly(raw, project_id, defer_async)
    rows = _Rows.of(envelope, project_id, defer_async)
    if isinstance(rows, BatchBody):
        return rows
    parsed, service, environment = rows.parsed, rows.service, rows.environment
    for index, event in enumerate(envelope.events):
        if event.event_type in _OBSERVATION and not event.event_id.strip(_CROCKFORD):
            obs = decode_observation(event.payload, event.event_type)
            if obs is not None:
                rows.add(obs, event.event_id, event.timestamp)
                continue
        one = {
            "event_id": event.event_id,
            "event_type": event.event_type,
            "timestamp": event.timestamp,
            "payload": orjson.loads(memoryview(event.payload)),
        }
        _add_or_refuse(parsed, index, one, service, environment)
    return rows.body()


def _read_spans(batch: SpanBatch, project_id: str, defer_async: bool) -> BatchBody | None:
    """A batch of observation events decoded whole; None when any event is not acceptable
    (the other ways then read it again, to explain what is not)."""
    rows = _Rows.of(batch, project_id, defer_async)
    if isinstance(rows, BatchBody):
        return rows
    for event in batch.events:
        obs, event_type = event.payload, event.event_type
        if (
            event_type not in _OBSERVATION
            or event.event_id.strip(_CROCKFORD)
            or not coherent(obs, event_type)
        ):
            return None
        rows.add(obs, event.event_id, event.timestamp)
    return rows.body()


class _Rows:
    """A batch being read: its accepted observation events → span rows and event ids;
    the version prefix is formatted once per distinct timestamp (a batch's events
    mostly share one)."""

    __slots__ = ("_at", "_stamp", "dedup", "environment", "events", "parsed", "project",
                 "service")  # fmt: skip

    @classmethod
    def of(cls, envelope: Any, project_id: str, defer_async: bool) -> _Rows | BatchBody:
        """The reading of a decoded envelope — or, when it asks for ``async_mode`` and
        ``defer_async``, its answer at once (only counted)."""
        dedup = envelope.deduplication if isinstance(envelope.deduplication, dict) else {}
        if defer_async and envelope.async_mode is True:
            return BatchBody(None, len(envelope.events), dedup)
        return cls(project_id, envelope, dedup)

    def __init__(self, project_id: str, envelope: Any, dedup: dict[str, Any]) -> None:
        self.project, self.dedup, self.events = project_id, dedup, len(envelope.events)
        self.service, self.environment = _origin(envelope.resource, envelope.environment)
        self.parsed = Parsed(WriteBatch(project_id))
        self._at: float | None = None
        self._stamp = ""

    def body(self) -> BatchBody:
        return BatchBody(self.parsed, self.events, self.dedup)

    def add(self, obs: Observation, event_id: str, timestamp: float) -> None:
        event_id = event_id.upper()  # ULIDs are case-insensitive
        if timestamp != self._at:
            self._at, self._stamp = timestamp, version_of(timestamp, "")
        row = observation_row(
            self.project, obs, self._stamp + event_id, self.service, self.environment
        )
        self.parsed.batch.spans.append(SpanWrite(obs.trace_id, obs.span_id, row, event_id))
        self.parsed.event_ids.append(event_id)


def _read_batch_slowly(raw: bytes, project_id: str, defer_async: bool) -> BatchBody:
    """A body whose envelope the schema refused: read as plain JSON, event by event."""
    data = load_json(raw)
    if not isinstance(data, dict):
        raise EnvelopeError("the body must be an object with an events list")
    events = data.get("events")
    dedup = data.get("deduplication")
    dedup = dedup if isinstance(dedup, dict) else {}
    if defer_async and data.get("async_mode") is True:
        if not isinstance(events, list):
            raise EnvelopeError("events: expected a list of events")
        return BatchBody(None, len(events), dedup)
    parsed = parse_events(events, project_id, data.get("resource"), data.get("environment"))
    return BatchBody(parsed, len(parsed.event_ids) + len(parsed.errors), dedup)


def observation_write(
    project_id: str,
    payload: Mapping[str, Any],
    version: str,
    event_id: str,
    event_type: str = "observation_create",
    service: str | None = None,
    environment: str | None = None,
) -> SpanWrite:
    """An observation payload (parsed JSON) as the write it makes; raises
    ``msgspec.ValidationError`` when ``schema.Observation`` or ``coherent`` refuses it."""
    obs = msgspec.convert(payload, Observation)
    if not coherent(obs, event_type):
        raise msgspec.ValidationError("the payload breaks a rule of SPEC §2")
    row = observation_row(project_id, obs, version, service, environment)
    return SpanWrite(obs.trace_id, obs.span_id, row, event_id)


def decode_observation(raw: msgspec.Raw, event_type: str) -> Observation | None:
    """The payload decoded, or None when the schema or a cross-field rule refuses it."""
    try:
        obs = OBSERVATION.decode(raw)
    except msgspec.DecodeError:
        return None
    return obs if coherent(obs, event_type) else None


def coherent(obs: Observation, event_type: str) -> bool:
    """The rules ``schema.Observation`` cannot say: ids of lowercase hex, not all zeros
    (their lengths are the schema's); a create has a name and a start; an end is not
    before its start."""
    trace_id, span_id, parent = obs.trace_id, obs.span_id, obs.parent_span_id
    if (trace_id + span_id + (parent or "")).strip(_HEX):
        return False
    if trace_id == _ZEROS_32 or _ZEROS_16 in (span_id, parent):
        return False
    start, end = obs.start_time_unix_nano, obs.end_time_unix_nano
    if event_type == "observation_create" and (not obs.name or start is None):
        return False
    return start is None or end is None or end >= start


def _origin(resource: Any, environment: Any) -> tuple[str | None, str | None]:
    """The service and environment a batch's spans get from its resource."""
    service = resource.get("service.name") if isinstance(resource, Mapping) else None
    if not isinstance(service, str):
        service = None
    if not isinstance(environment, str):
        environment = None
    if environment is None and isinstance(resource, Mapping):
        env = resource.get("deployment.environment")
        environment = env if isinstance(env, str) else None
    return service, environment


def parse_events(
    events: Any, project_id: str, resource: Any = None, environment: Any = None
) -> Parsed:
    """Check each event (already parsed JSON) and fold the good ones into one ``WriteBatch``."""
    if not isinstance(events, list):
        raise EnvelopeError("events: expected a list of events")
    service, environment = _origin(resource, environment)
    parsed = Parsed(WriteBatch(project_id))
    for index, event in enumerate(events):
        _add_or_refuse(parsed, index, event, service, environment)
    return parsed


def _add_or_refuse(
    parsed: Parsed, index: int, event: Any, service: str | None, environment: str | None
) -> None:
    try:
        _add(parsed.batch, event, service, environment)
    except _Bad as exc:
        event_id = event.get("event_id") if isinstance(event, Mapping) else None
        parsed.errors.append(
            {
                "event_id": event_id if isinstance(event_id, str) else None,
                "index": index,
                "error": "invalid_payload",
                "details": str(exc),
                "retryable": False,
            }
        )
        return
    parsed.event_ids.append(event["event_id"].upper())


class _Bad(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")


def _add(batch: WriteBatch, event: Any, service: str | None, environment: str | None) -> None:
    if not isinstance(event, Mapping):
        raise _Bad("event", "expected an object")
    event_id = event.get("event_id")
    if not isinstance(event_id, str) or not _ULID.fullmatch(event_id):
        raise _Bad("event_id", "expected a ULID (26 Crockford base-32 characters)")
    event_type = event.get("event_type")
    if event_type not in EVENT_TYPES:
        raise _Bad("event_type", "expected one of " + ", ".join(sorted(EVENT_TYPES)))
    timestamp = event.get("timestamp")
    if not isinstance(timestamp, (int, float)) or isinstance(timestamp, bool):
        raise _Bad("timestamp", "expected Unix seconds as a number")
    if not 0 <= timestamp < 1e11:
        raise _Bad("timestamp", "expected Unix seconds as a number")
    payload = event.get("payload")
    if not isinstance(payload, Mapping):
        raise _Bad("payload", "expected an object")
    event_id = event_id.upper()  # ULIDs are case-insensitive: one spelling stored
    version = version_of(timestamp, event_id)
    if event_type in _OBSERVATION:
        _check_observation(payload, event_type)
        try:
            write = observation_write(
                batch.project_id, payload, version, event_id, event_type, service, environment
            )
        except msgspec.ValidationError as exc:
            raise _Bad("payload", str(exc)) from None
        batch.spans.append(write)
    elif event_type in _TRACE:
        _hex(payload, "trace_id", TRACE_ID, 32)
        _optional(payload, "name", str)
        _optional(payload, "user_id", str)
        _optional(payload, "session_id", str)
        _optional(payload, "attributes", Mapping)
        registers = trace_state(payload, version)
        if registers.values.get("environment") is None:
            registers.values["environment"] = environment
        batch.traces.append(TraceWrite(payload["trace_id"], registers, event_id))
    else:
        name = payload.get("name")
        if not isinstance(name, str) or not name:
            raise _Bad("payload.name", "expected a non-empty string")
        trace_id = payload.get("trace_id")
        if trace_id is not None:
            _hex(payload, "trace_id", TRACE_ID, 32)
        span_id = payload.get("span_id")
        if span_id is not None:
            _hex(payload, "span_id", _SPAN_ID, 16)
        if event_type == "metric" and type(payload.get("value")) not in (int, float):
            raise _Bad("payload.value", "expected a number")
        time_ns = payload.get("time_unix_nano")
        if type(time_ns) is not int or not 0 <= time_ns < _MAX_NS:
            time_ns = int(timestamp * 1e9)
        batch.records.append(
            RecordRow(event_id, event_type, trace_id, span_id, name, time_ns, dict(payload))
        )


def _check_observation(payload: Mapping[str, Any], event_type: str) -> None:
    _hex(payload, "trace_id", TRACE_ID, 32)
    _hex(payload, "span_id", _SPAN_ID, 16)
    parent = payload.get("parent_span_id")
    if parent is not None:
        _hex(payload, "parent_span_id", _SPAN_ID, 16)
    name = payload.get("name")
    if event_type == "observation_create" and (not isinstance(name, str) or not name):
        raise _Bad("payload.name", "expected a non-empty string")
    _optional(payload, "name", str)
    kind = payload.get("kind")
    if kind is not None and kind not in _KINDS:
        raise _Bad("payload.kind", "expected one of " + ", ".join(sorted(_KINDS)))
    _optional(payload, "type", str)
    start = payload.get("start_time_unix_nano")
    if event_type == "observation_create" and start is None:
        raise _Bad("payload.start_time_unix_nano", "expected nanoseconds since the epoch")
    for key in ("start_time_unix_nano", "end_time_unix_nano"):
        value = payload.get(key)
        if value is not None and (type(value) is not int or not 0 <= value < _MAX_NS):
            raise _Bad(f"payload.{key}", "expected a non-negative integer of nanoseconds")
    end = payload.get("end_time_unix_nano")
    if isinstance(start, int) and isinstance(end, int) and end < start:
        raise _Bad("payload.end_time_unix_nano", "ends before start_time_unix_nano")
    status = payload.get("status")
    if status is not None:
        if not isinstance(status, Mapping) or status.get("code") not in _STATUS:
            raise _Bad("payload.status.code", "expected one of error, ok, unset")
        if not isinstance(status.get("message", ""), str):
            raise _Bad("payload.status.message", "expected a string")
    _optional(payload, "attributes", Mapping)
    _optional(payload, "events", list)
    _optional(payload, "links", list)
    _optional(payload, "model", str)
    usage = payload.get("usage")
    if usage is not None:
        if not isinstance(usage, Mapping):
            raise _Bad("payload.usage", "expected an object")
        for key, value in usage.items():
            if type(value) is not int or not 0 <= value < _MAX_NS:
                raise _Bad(f"payload.usage.{key}", "expected a non-negative integer")
    cost = payload.get("cost_usd")
    if cost is not None and type(cost) not in (int, float):
        raise _Bad("payload.cost_usd", "expected a number")
    sequence = payload.get("sequence")
    if sequence is not None and (type(sequence) is not int or not 0 <= sequence < _MAX_NS):
        raise _Bad("payload.sequence", "expected a non-negative integer")


def _hex(payload: Mapping[str, Any], key: str, pattern: re.Pattern[str], size: int) -> None:
    value = payload.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value) or value == "0" * size:
        raise _Bad(f"payload.{key}", f"expected {size} lowercase hex characters, not all zero")


def _optional(payload: Mapping[str, Any], key: str, kind: type) -> None:
    value = payload.get(key)
    if value is not None and not isinstance(value, kind):
        names: dict[type, str] = {str: "a string", Mapping: "an object", list: "a list"}
        name = names.get(kind, kind.__name__)
        raise _Bad(f"payload.{key}", f"expected {name}")
