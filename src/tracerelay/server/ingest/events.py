"""SPEC §2 events checked one by one and turned into what a store writes.

Each event is checked on its own: a bad one becomes an error entry with the
path to the bad field (``payload.trace_id: expected 32 lowercase hex
characters``) and ``retryable: false``, and the others are stored. Nothing
here raises for bad input; ``EnvelopeError`` is for a body that is not a
batch at all (answered 400).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tracerelay.records import EVENT_TYPES
from tracerelay.server.storage.merge import span_state, trace_state, version_of
from tracerelay.server.storage.rows import RecordRow, SpanWrite, TraceWrite, WriteBatch

__all__ = ["TRACE_ID", "EnvelopeError", "Parsed", "parse_events"]

_OBSERVATION = frozenset({"observation_create", "observation_update", "observation_complete"})
_TRACE = frozenset({"trace_create", "trace_update"})
_ULID = re.compile(r"[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}")
TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_KINDS = frozenset({"internal", "server", "client", "producer", "consumer"})
_STATUS = frozenset({"unset", "ok", "error"})
_MAX_NS = 1 << 63


class EnvelopeError(Exception):
    """The body is not a batch (400): no event could even be looked at."""


@dataclass(slots=True)
class Parsed:
    """The events of one request: what to write, and what was refused."""

    batch: WriteBatch
    event_ids: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


class _Bad(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")


def parse_events(
    events: Any, project_id: str, resource: Any = None, environment: Any = None
) -> Parsed:
    """Check each event and fold the good ones into one ``WriteBatch``."""
    if not isinstance(events, list):
        raise EnvelopeError("events: expected a list of events")
    service = resource.get("service.name") if isinstance(resource, Mapping) else None
    if not isinstance(service, str):
        service = None
    if not isinstance(environment, str):
        environment = None
    if environment is None and isinstance(resource, Mapping):
        env = resource.get("deployment.environment")
        environment = env if isinstance(env, str) else None
    parsed = Parsed(WriteBatch(project_id))
    for index, event in enumerate(events):
        event_id = event.get("event_id") if isinstance(event, Mapping) else None
        try:
            _add(parsed.batch, event, service, environment)
        except _Bad as exc:
            parsed.errors.append(
                {
                    "event_id": event_id if isinstance(event_id, str) else None,
                    "index": index,
                    "error": "invalid_payload",
                    "details": str(exc),
                    "retryable": False,
                }
            )
            continue
        parsed.event_ids.append(event["event_id"].upper())
    return parsed


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
        state = span_state(payload, version, service=service, environment=environment)
        batch.spans.append(SpanWrite(payload["trace_id"], payload["span_id"], state, event_id))
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
            if type(value) is not int or value < 0:
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
