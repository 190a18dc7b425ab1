"""Event ids seen recently: the fast check before a write (the store's keys are the guarantee).

An in-process LRU with a TTL. An id is remembered only after the commit that
stored it, so a write that failed never makes its retry look like a repeat.
(Redis, shared by replicas, comes with the PostgreSQL deployment.)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

__all__ = ["SeenIds"]


class SeenIds:
    """At most ``capacity`` ids, each forgotten ``ttl`` seconds after it was stored."""

    def __init__(
        self, *, capacity: int = 1_000_000, ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.capacity = capacity
        self.ttl = ttl
        self._clock = clock
        # event id → (project, when stored), oldest first. Keyed by the id alone so a
        # batch is looked up and noted with set and dict operations (C loops), not a
        # Python loop per id; an id two projects both sent is kept for the latter only
        # (the former's repeat then falls to the store's key — never a false repeat).
        self._ids: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def seen(self, project_id: str, event_ids: Iterable[str]) -> set[str]:
        """The ids of ``event_ids`` that ``project_id`` stored within the TTL."""
        now = self._clock()
        with self._lock:
            ids = self._ids
            found = {
                event_id
                for event_id in ids.keys() & event_ids
                if ids[event_id][0] == project_id and now - ids[event_id][1] < self.ttl
            }
        self.hits += len(found)
        return found

    def remember(self, project_id: str, event_ids: Iterable[str]) -> None:
        """Note ids just committed."""
        now = self._clock()
        noted = dict.fromkeys(event_ids, (project_id, now))
        with self._lock:
            ids = self._ids
            for again in ids.keys() & noted:
                ids.move_to_end(again)
            ids.update(noted)
            for _ in range(len(ids) - self.capacity):
                ids.popitem(last=False)
