"""Events about one span (or trace) merged into its stored row: any order, any repetition.

A span can be told in several events: ``observation_create`` with start and
end (the usual case), or ``observation_create`` without end when it starts,
``observation_update`` while it runs, ``observation_complete`` at the end.
The SDK retries and replays, the network reorders, and several server
replicas write at once, so each may arrive late, early, or twice. SPEC §2:
the stored result must not depend on order or repetition.

So each field is a last-writer-wins register. An event's *version* is
``(timestamp, event_id)``, written as one string that sorts the same way.
An event sets a field when it carries a value for it (None, an ``unset``
status and an empty text carry none: events never unset anything) and the
field is empty or was set by an older version. Attributes are registers one
key at a time; span events and links are sets (union by their identity).
Every field ends up with the value of the newest event that set it, whatever
the order of arrival, and a repeat changes nothing: the merge is
commutative, associative and idempotent.

Versions are stored compactly: ``base`` (the version of the event that made
the row) and ``overrides`` (only the fields a later event set). A row written
by one event — nearly all of them — carries no overrides at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "SPAN_FIELDS",
    "TRACE_FIELDS",
    "Registers",
    "SpanState",
    "event_key",
    "link_key",
    "trace_state",
    "union",
    "version_of",
]

# Span fields kept as registers; "status" is (code, message) and "usage" the
# token counts, each one register so their parts always come from one event.
SPAN_FIELDS = (
    "parent_span_id",
    "name",
    "kind",
    "type",
    "start_ns",
    "end_ns",
    "status",
    "input",
    "output",
    "model",
    "usage",
    "cost_usd",
    "sequence",
    "trace_state",
    "service",
    "environment",
    "scope",
)
TRACE_FIELDS = (
    "name",
    "user_id",
    "session_id",
    "tags",
    "metadata",
    "release",
    "environment",
    "version",
    "public",
    "input",
    "output",
)
_ATTR = "attr:"


def version_of(timestamp: float, event_id: str) -> str:
    """The sortable version of an event: its timestamp in ns, zero-padded, then its id."""
    return f"{max(0, int(timestamp * 1e9)):020d}:{event_id}"


@dataclass(slots=True)
class Registers:
    """Fields and attributes, each with the version of the event that set it."""

    values: dict[str, Any]
    attributes: dict[str, Any]
    base: str
    overrides: dict[str, str] = field(default_factory=dict)

    def version(self, key: str) -> str:
        """The version that set ``key`` (a field, or ``attr:<name>``)."""
        return self.overrides.get(key, self.base)

    def _set(self, key: str, version: str) -> None:
        if version == self.base:
            self.overrides.pop(key, None)
        else:
            self.overrides[key] = version

    def merge(self, other: Registers) -> bool:
        """Take from ``other`` every value newer than this one's (or filling an empty
        field); True if anything changed."""
        changed = False
        values = self.values
        for key, value in other.values.items():
            if value is None:
                continue
            incoming = other.version(key)
            if values.get(key) is None or incoming > self.version(key):
                if values.get(key) != value or self.version(key) != incoming:
                    changed = True
                values[key] = value
                self._set(key, incoming)
        attributes = self.attributes
        for name, value in other.attributes.items():
            key = _ATTR + name
            incoming = other.version(key)
            if name not in attributes or incoming > self.version(key):
                if attributes.get(name) != value or self.version(key) != incoming:
                    changed = True
                attributes[name] = value
                self._set(key, incoming)
        return changed

    def knows(self, version: str) -> bool:
        """Whether an event of ``version`` was merged here already (a repeat)."""
        return version == self.base or version in self.overrides.values()


@dataclass(slots=True)
class SpanState(Registers):
    """A span's registers plus its events and links (sets)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)

    def merge(self, other: Registers) -> bool:
        """``Registers.merge``, plus the union of events and links."""
        changed = Registers.merge(self, other)
        if isinstance(other, SpanState):
            if other.events:
                merged = union(self.events, other.events, event_key)
                changed = changed or merged != self.events
                self.events = merged
            if other.links:
                merged = union(self.links, other.links, link_key)
                changed = changed or merged != self.links
                self.links = merged
        return changed


def trace_state(payload: Mapping[str, Any], version: str) -> Registers:
    """The registers a ``trace_create`` / ``trace_update`` event sets."""
    values = {name: payload.get(name) for name in TRACE_FIELDS}
    attributes = payload.get("attributes")
    return Registers(values, dict(attributes) if isinstance(attributes, Mapping) else {}, version)


def _canonical(item: Mapping[str, Any]) -> bytes:
    return orjson.dumps(item, option=orjson.OPT_SORT_KEYS)


def union(ours: list[dict[str, Any]], theirs: Iterable[Any], key: Any) -> list[dict[str, Any]]:
    """``ours`` ∪ ``theirs`` by identity, sorted; of two items with one identity the
    one with the larger canonical form stays, so the result never depends on order."""
    merged: dict[Any, dict[str, Any]] = {key(item): item for item in ours}
    for item in theirs:
        if not isinstance(item, Mapping):
            continue
        item = dict(item)
        ident = key(item)
        kept = merged.get(ident)
        if kept is None or _canonical(item) > _canonical(kept):
            merged[ident] = item
    return [merged[ident] for ident in sorted(merged)]


def event_key(item: Mapping[str, Any]) -> tuple[int, str]:
    """A span event's identity: its time and name."""
    time = item.get("time_unix_nano")
    return (time if isinstance(time, int) else 0, str(item.get("name", "")))


def link_key(item: Mapping[str, Any]) -> tuple[str, str]:
    """A link's identity: the span it points to."""
    return (str(item.get("trace_id", "")), str(item.get("span_id", "")))
