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
        self._ids: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def seen(self, project_id: str, event_ids: Iterable[str]) -> set[str]:
        """The ids of ``event_ids`` stored within the TTL."""
        now = self._clock()
        found: set[str] = set()
        with self._lock:
            ids = self._ids
            for event_id in event_ids:
                stored = ids.get((project_id, event_id))
                if stored is not None and now - stored < self.ttl:
                    found.add(event_id)
        self.hits += len(found)
        return found

    def remember(self, project_id: str, event_ids: Iterable[str]) -> None:
        """Note ids just committed."""
        now = self._clock()
        with self._lock:
            ids = self._ids
            for event_id in event_ids:
                key = (project_id, event_id)
                ids[key] = now
                ids.move_to_end(key)
            while len(ids) > self.capacity:
                ids.popitem(last=False)
