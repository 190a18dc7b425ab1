"""A fake tracerelay ingest server that misbehaves on purpose: ``tracerelay mock``.

Point an application (or a test) at it to see what its delivery settings do
when the server answers 413, 429 or 503 with ``Retry-After``, 500, replies too
slowly, resets the connection, or processes a batch and then loses the reply.
It speaks the ingest half of SPEC §2 (batch and stream endpoints, gzip, bounded
decompression, deduplication by event id, ``Authorization: Bearer``) and counts
every delivery, so a test can check that each event arrived — and how often.
Standard library only; it sits beside the SDK, not inside the delivery flow::

    from tracerelay.mock import Faults, MockServer

    with MockServer(faults=Faults(rate_503=0.2, rate_lost_reply=0.05), seed=1) as server:
        tracerelay.init(endpoint=server.url, ...)
        ...
        assert set(server.received) == expected_ids

Modules: ``_faults`` (settings and the seeded draw), ``_ingest`` (decode,
validate, record, answer; no sockets), ``_server`` (HTTP and lifecycle).
"""

from __future__ import annotations

from tracerelay.mock._faults import FAULT_KINDS, Faults
from tracerelay.mock._ingest import EVENT_TYPES, format_stats
from tracerelay.mock._server import MockServer

__all__ = ["EVENT_TYPES", "FAULT_KINDS", "Faults", "MockServer", "format_stats"]
