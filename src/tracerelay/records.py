"""Records other than spans: scores, generic events, metric points, trace updates, raw events.

Each is a small object with the same face as a finished ``Span`` for the
pipeline: an ``event_type`` (SPEC §2), an ``event_id`` filled in once by the
pipeline, a ``timestamp`` in Unix seconds, ``attributes`` for processors to
clean, and ``to_wire()`` giving the event's payload.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

__all__ = ["EVENT_TYPES", "Event", "MetricPoint", "RawEvent", "Record", "Score", "TraceUpdate"]

EVENT_TYPES = frozenset(
    {
        "trace_create",
        "trace_update",
        "observation_create",
        "observation_update",
        "observation_complete",
        "quality_score_create",
        "quality_score_update",
        "metric",
        "event_create",
    }
)
"""Every ``event_type`` of SPEC §2."""


class Record:
    """Base of the non-span records: id, time and attributes."""

    __slots__ = ("attributes", "event_id", "timestamp")
    event_type = "event_create"

    def __init__(self, attributes: Mapping[str, Any] | None, timestamp: float | None) -> None:
        self.event_id: str | None = None
        self.timestamp = time.time() if timestamp is None else timestamp
        self.attributes: dict[str, Any] = dict(attributes) if attributes else {}

    def to_wire(self) -> dict[str, Any]:
        """The record as the ``payload`` of its event."""
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_wire().items())
        return f"{type(self).__name__}({fields})"


class Score(Record):
    """A quality score on a trace or one span (``quality_score_create``)."""

    __slots__ = ("comment", "data_type", "name", "span_id", "trace_id", "value")
    event_type = "quality_score_create"

    def __init__(
        self,
        name: str,
        value: float | str | bool,
        *,
        trace_id: str | None,
        span_id: str | None = None,
        comment: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        timestamp: float | None = None,
    ) -> None:
        super().__init__(attributes, timestamp)
        self.name = name
        self.value = value
        self.trace_id = trace_id
        self.span_id = span_id
        self.comment = comment
        if isinstance(value, bool):
            self.data_type = "boolean"
        elif isinstance(value, (int, float)):
            self.data_type = "numeric"
        else:
            self.data_type = "categorical"

    def to_wire(self) -> dict[str, Any]:
        """Payload: name, value, data_type, trace/span ids, comment, attributes."""
        return {
            "name": self.name,
            "value": self.value,
            "data_type": self.data_type,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "comment": self.comment,
            "attributes": self.attributes,
        }


class Event(Record):
    """A named, timed occurrence such as ``user_login`` (``event_create``)."""

    __slots__ = ("name", "span_id", "trace_id")

    def __init__(
        self,
        name: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        trace_id: str | None = None,
        span_id: str | None = None,
        timestamp: float | None = None,
    ) -> None:
        super().__init__(attributes, timestamp)
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id

    def to_wire(self) -> dict[str, Any]:
        """Payload: name, attributes and, inside a span, its trace and span ids."""
        return {
            "name": self.name,
            "time_unix_nano": int(self.timestamp * 1e9),
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "attributes": self.attributes,
        }


class MetricPoint(Record):
    """One measurement of a named metric (``metric``)."""

    __slots__ = ("kind", "name", "unit", "value")
    event_type = "metric"

    def __init__(
        self,
        name: str,
        value: float,
        *,
        kind: str = "gauge",
        unit: str = "",
        attributes: Mapping[str, Any] | None = None,
        timestamp: float | None = None,
    ) -> None:
        super().__init__(attributes, timestamp)
        self.name = name
        self.value = value
        self.kind = kind
        self.unit = unit

    def to_wire(self) -> dict[str, Any]:
        """Payload: name, kind (gauge, counter or histogram), value, unit, attributes."""
        return {
            "name": self.name,
            "kind": self.kind,
            "value": self.value,
            "unit": self.unit,
            "time_unix_nano": int(self.timestamp * 1e9),
            "attributes": self.attributes,
        }


class TraceUpdate(Record):
    """Trace-level fields: name, user, session, tags, metadata (``trace_update``)."""

    __slots__ = ("fields", "trace_id")
    event_type = "trace_update"

    def __init__(
        self, trace_id: str, fields: Mapping[str, Any], *, timestamp: float | None = None
    ) -> None:
        super().__init__(None, timestamp)
        self.trace_id = trace_id
        self.fields = dict(fields)

    def to_wire(self) -> dict[str, Any]:
        """Payload: the trace id and each field that was given."""
        payload = {"trace_id": self.trace_id, **self.fields}
        if self.attributes:
            payload["attributes"] = self.attributes
        return payload


class RawEvent(Record):
    """An event built by the caller: any SPEC §2 ``event_type`` with its payload as given."""

    __slots__ = ("event_type", "payload")

    def __init__(
        self, event_type: str, payload: Mapping[str, Any], *, timestamp: float | None = None
    ) -> None:
        super().__init__(
            payload.get("attributes") if isinstance(payload.get("attributes"), Mapping) else None,
            timestamp,
        )
        self.event_type = event_type
        self.payload = dict(payload)

    def to_wire(self) -> dict[str, Any]:
        """Payload: as given, with the cleaned attributes in place of the given ones."""
        if self.attributes or "attributes" in self.payload:
            return {**self.payload, "attributes": self.attributes}
        return self.payload
