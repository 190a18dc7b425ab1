"""Per-key rate limits: a token bucket per API key, counted in events.

Each key may send ``rate`` events a second on average and ``burst`` at once. A
request that would overdraw its bucket is refused whole (429 with
``Retry-After``: the seconds until the bucket holds enough), and takes nothing
from it, so the SDK's retry after that wait is admitted. This bucket lives in
the process; replicas sharing one limit need Redis (see docs/design.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token buckets by key id; call from the event loop (not thread-safe)."""

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("need rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key id → (tokens, at)

    def admit(self, key_id: str, cost: int) -> float:
        """0.0 if ``cost`` events may pass now (taken from the bucket), else the seconds
        to wait. A request larger than the burst passes when the bucket is full."""
        now = self._clock()
        tokens, at = self._buckets.get(key_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        need = min(float(cost), self.burst)
        if tokens >= need:
            self._buckets[key_id] = (tokens - need, now)
            return 0.0
        self._buckets[key_id] = (tokens, now)
        if len(self._buckets) > 100_000:
            self._buckets.clear()  # bounded: a flood of distinct keys cannot grow memory
        return (need - tokens) / self.rate

    @staticmethod
    def retry_after(wait: float) -> str:
        """``Retry-After`` for a wait: whole seconds, rounded up, at least 1."""
        return str(max(1, math.ceil(wait)))
