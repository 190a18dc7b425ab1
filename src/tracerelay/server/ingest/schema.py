"""The shapes a batch body must have, as msgspec types: decoded and checked in one pass.

``POST /v1/telemetry/batch`` bodies are decoded straight into these types by
msgspec's JSON decoder, which checks every type, pattern and bound in C while
it parses (~8 µs a span where a ``json.loads`` then field-by-field checks in
Python took ~55). Each event's payload is kept as raw JSON until its type is
known; an observation's payload is then decoded into ``Observation``.

These types, with the few rules they cannot express (an id's alphabet, a
create's name and start, an end not before its start: ``events.py``'s
``coherent``), decide what is accepted. What they refuse is looked at again,
event by event, by ``events.py``'s checks, whose only job is to say where and
why (``payload.trace_id: expected 32 lowercase hex characters``): the two
agree on every payload (a hypothesis test holds them to it).
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypedDict, TypeVar

import msgspec
from msgspec import Meta, Struct

__all__ = [
    "BATCH",
    "OBSERVATION",
    "SPAN_BATCH",
    "Batch",
    "BatchEnvelope",
    "Event",
    "EventEnvelope",
    "Observation",
    "SpanBatch",
    "SpanEvent",
    "Status",
]

_MAX_INT64 = (1 << 63) - 1
# Ids are checked for length here and for their characters by ``events.py``
# (``str.strip`` of the alphabet: ~0.2 µs, where a pattern costs msgspec ~1.3 µs).
TraceId = Annotated[str, Meta(min_length=32, max_length=32)]
SpanId = Annotated[str, Meta(min_length=16, max_length=16)]
Ulid = Annotated[str, Meta(min_length=26, max_length=26)]
Nanoseconds = Annotated[int, Meta(ge=0, le=_MAX_INT64)]
Kind = Literal["internal", "server", "client", "producer", "consumer"]


class _StatusCode(TypedDict):
    code: Literal["unset", "ok", "error"]


class Status(_StatusCode, total=False):
    """A span's status (a code, and a message that may be absent): a plain dict."""

    message: str


# gc=False on the structs below: decoded from JSON they cannot form reference cycles,
# so the cyclic collector need not track them (a batch decodes hundreds at a time).
class Observation(Struct, gc=False):
    """The payload of ``observation_create`` / ``_update`` / ``_complete`` (SPEC §1).

    Every field but the ids may be absent (an update carries only what it changes);
    unknown fields are ignored. Cross-field rules (a create has a name and a start,
    an end is not before its start) are checked by ``events.py``."""

    trace_id: TraceId
    span_id: SpanId
    parent_span_id: SpanId | None = None
    name: str | None = None
    kind: Kind | None = None
    type: str | None = None
    start_time_unix_nano: Nanoseconds | None = None
    end_time_unix_nano: Nanoseconds | None = None
    status: Status | None = None
    attributes: dict[str, Any] | None = None
    events: list[Any] | None = None
    links: list[Any] | None = None
    model: str | None = None
    usage: dict[str, Annotated[int, Meta(ge=0, le=_MAX_INT64)]] | None = None
    cost_usd: float | None = None
    sequence: Nanoseconds | None = None
    input: Any = None
    output: Any = None
    trace_state: Any = None
    scope: Any = None


P = TypeVar("P")


class Event(Struct, Generic[P], gc=False):
    """One event of a batch; its payload raw JSON (``EventEnvelope``: decoded later by its
    event type) or an ``Observation`` (``SpanEvent``)."""

    event_id: Ulid
    event_type: str
    timestamp: Annotated[float, Meta(ge=0, lt=1e11)]
    payload: P


class Batch(Struct, Generic[P], gc=False):
    """A batch body (SPEC §2). Fields the server reads leniently stay ``Any``."""

    events: list[Event[P]]
    resource: Any = None
    environment: Any = None
    deduplication: Any = None
    async_mode: Any = None


EventEnvelope = Event[msgspec.Raw]
BatchEnvelope = Batch[msgspec.Raw]
SpanEvent = Event[Observation]
SpanBatch = Batch[Observation]
"""A batch whose every payload is an observation: the usual SDK batch, decoded in one
pass (no raw payload kept and decoded again per event)."""


BATCH = msgspec.json.Decoder(BatchEnvelope)
SPAN_BATCH = msgspec.json.Decoder(SpanBatch)
OBSERVATION = msgspec.json.Decoder(Observation)
