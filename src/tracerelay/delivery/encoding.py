"""Request bodies: events encoded once, spliced into batches or single stream uploads.

Each record is encoded to JSON once, when the exporter takes it, and kept as
bytes with its event id (``EncodedEvent``). A batch body is then those bytes
joined inside the envelope with the resource (encoded once per client), so
splitting a batch after a 413, resending only a 207's retryable events, or
replaying from the spool never encodes an event twice — and the event id,
fixed when the record was made, is the same on every attempt. A stream upload
(``POST /v1/uploads/stream``, instant mode) is one event's bytes spliced in
the same way beside ``system_info``, which is encoded once per client too.

Compression: gzip when the body is at least ``min_size`` bytes and the
compressed body is smaller than ``threshold`` × the raw one (0.8: it must save
more than 20 %). Level 3 was chosen by measurement on span batches: faster
than level 1 there and a better ratio (about 6.5×); level 6 gains 10 % more
ratio for 70 % more CPU.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from tracerelay.resource import system_info
from tracerelay.serialization import dumps, envelope

__all__ = ["EncodedBatch", "EncodedEvent", "Encoder", "encode_event"]

GZIP_LEVEL = 3
_GZIP_WBITS = 31  # zlib's way of asking for a gzip header and trailer


class EncodedEvent(NamedTuple):
    """One SPEC §2 event as JSON bytes, with its id for splitting and deduplication.

    A named tuple, not a frozen dataclass: one is made per record on the pipeline
    thread, and a frozen dataclass's ``__init__`` (``object.__setattr__`` per
    field) cost 0.4 µs of the ~2 µs it takes to encode a span.
    """

    event_id: str
    data: bytes


def encode_event(record: Any) -> EncodedEvent:
    """Encode a processed record (its ``event_id`` already set) as its SPEC §2 event.

    The bytes are copied once: orjson returns each result in an allocation of
    at least 4 KiB whatever its length, so an event of 450 bytes held in the
    sender's queue would cost 4 KiB of memory (measured with tracemalloc: 80 MB
    for 19,600 queued events). The copy is exact-sized and costs ~0.1 µs.
    """
    return EncodedEvent(record.event_id, bytes(memoryview(dumps(envelope(record)))))


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """A request body ready to send, and what it holds.

    ``stream`` is True for a single-event upload to ``/v1/uploads/stream``,
    False for a ``/v1/telemetry/batch`` body.
    """

    body: bytes
    headers: dict[str, str]
    raw_size: int
    events: Sequence[EncodedEvent]
    stream: bool = False

    @property
    def compressed(self) -> bool:
        """True when the body is gzip."""
        return self.headers.get("Content-Encoding") == "gzip"


class Encoder:
    """Builds request bodies for one client: its resource and options fixed at construction."""

    def __init__(
        self,
        resource: Mapping[str, Any],
        *,
        environment: str | None = None,
        deduplication: Mapping[str, Any] | None = None,
        compression: str = "gzip",
        threshold: float = 0.8,
        min_size: int = 1024,
    ) -> None:
        # Everything after the events array is the same in every body: encode it once.
        tail: dict[str, Any] = {"resource": dict(resource)}
        if environment is not None:
            tail["environment"] = environment
        if deduplication is not None:
            tail["deduplication"] = dict(deduplication)
        self._tail = b"]," + dumps(tail)[1:]
        self._stream_tail = b',"system_info":' + dumps(system_info(resource)) + b"}"
        self._compress = compression == "gzip"
        self._threshold = threshold
        self._min_size = min_size

    def body(self, events: Sequence[EncodedEvent]) -> bytes:
        """The uncompressed JSON body for ``events``."""
        return b'{"events":[' + b",".join(e.data for e in events) + self._tail

    def encode(self, events: Sequence[EncodedEvent]) -> EncodedBatch:
        """The batch body for ``events``, gzip-compressed when that pays."""
        return self._pack(self.body(events), events, stream=False)

    def encode_stream(self, event: EncodedEvent) -> EncodedBatch:
        """The stream upload of one event, ``{"event": ..., "system_info": ...}`` (SPEC §2)."""
        return self._pack(b'{"event":' + event.data + self._stream_tail, (event,), stream=True)

    def _pack(self, raw: bytes, events: Sequence[EncodedEvent], *, stream: bool) -> EncodedBatch:
        headers = {"Content-Type": "application/json"}
        if self._compress and len(raw) >= self._min_size:
            packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
            packed = packer.compress(raw) + packer.flush()
            if len(packed) < len(raw) * self._threshold:
                headers["Content-Encoding"] = "gzip"
                return EncodedBatch(packed, headers, len(raw), events, stream)
        return EncodedBatch(raw, headers, len(raw), events, stream)
