"""Operating on a spool by hand: what ``tracerelay spool replay`` and ``purge`` do.

``replay`` adopts the batches of processes that are gone and sends them, oldest
first, through the same delivery policy as a running client (splits after 413,
resends after 207, retries with backoff); it stops at the first batch the
server refuses or cannot take, leaving it and the rest on disk. ``purge``
deletes batches of processes that are gone, and the records they kept
unprocessed at exit (``.raw`` files, ``tracerelay.pending``). Batches of
running processes are never touched: those processes send their own. Replay
leaves ``.raw`` files alone: their records have not been through the app's
processors (redaction among them), so only the app, at its next start,
processes and sends them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tracerelay.delivery.aimd import Aimd
from tracerelay.delivery.deliverer import Deliverer
from tracerelay.delivery.encoding import Encoder
from tracerelay.delivery.policy import Backoff
from tracerelay.delivery.spool import Spool, inspect_spool
from tracerelay.delivery.transport import HttpTransport

__all__ = ["ReplayResult", "purge", "replay"]

Progress = Callable[[int, int, int], None]
"""``progress(batches_done, batches_total, events_sent)``, called after each batch."""


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did."""

    batches_sent: int
    events_sent: int
    batches_left: int
    events_left: int
    held_by_running: int
    """Batch files owned by live processes, left for them to send."""


def replay(
    directory: str,
    *,
    endpoint: str,
    api_key: str | None,
    resource: Mapping[str, Any],
    timeout: float = 10.0,
    max_retries: int = 3,
    progress: Progress | None = None,
) -> ReplayResult:
    """Send every batch of ``directory`` whose owner is gone; see the module docstring."""
    with Spool(directory, max_bytes=1 << 62) as spool:
        spool.adopt_orphans()
        entries = spool.entries()
        transport = HttpTransport(endpoint, api_key=api_key, timeout=timeout)
        deliverer = Deliverer(
            transport,
            Encoder(resource),
            batch_size=Aimd(minimum=1, maximum=1000, initial=1000),
            backoff=Backoff(0.2, cap=5.0),
            max_retries=max_retries,
        )
        sent_batches = sent_events = 0
        try:
            for entry in entries:
                batch = spool.read(entry)
                if batch is None:  # corrupt: set aside by the spool, with a warning
                    continue
                events = batch.encoded()
                if not deliverer.deliver(events, from_spool=True):
                    break
                spool.remove(entry)
                sent_batches += 1
                sent_events += len(events)
                if progress is not None:
                    progress(sent_batches, len(entries), sent_events)
        finally:
            transport.close()
        left = spool.entries()
    held = sum(
        owner["files"] for owner in inspect_spool(directory)["owners"].values() if owner["alive"]
    )
    return ReplayResult(
        sent_batches, sent_events, len(left), sum(e.event_count for e in left), held
    )


def purge(directory: str) -> tuple[int, int, int]:
    """Delete the batches, and the records kept unprocessed at an exit, of processes that
    are gone; returns (batch files, events, kept records) deleted."""
    if not os.path.isdir(directory):
        return 0, 0, 0
    with Spool(directory, max_bytes=1 << 62) as spool:
        spool.adopt_orphans()
        entries, kept = spool.entries(), spool.pending()
        for entry in entries + kept:
            spool.remove(entry)
    return len(entries), sum(e.event_count for e in entries), sum(e.event_count for e in kept)
