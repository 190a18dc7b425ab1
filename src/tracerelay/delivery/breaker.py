"""The circuit breaker: stop sending while the server keeps failing, probe before resuming.

    closed ──(failure_threshold consecutive failures)──► open
    open ──(recovery_timeout elapsed: one cheap GET /health probe)──► half-open
    half-open ──(probe succeeds)──► closed      half-open ──(probe fails)──► open

While the breaker is open the exporter writes batches to the spool instead of
the network, so an outage costs neither retries nor waiting; when it closes the
spool is replayed. The clock is injectable so the transitions can be tested
without sleeping. Thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

__all__ = ["CircuitBreaker", "State"]

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Counts consecutive failures and decides whether requests may go out."""

    def __init__(
        self,
        failure_threshold: int,
        recovery_timeout: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or recovery_timeout <= 0:
            raise ValueError(
                f"need failure_threshold >= 1 and recovery_timeout > 0, got "
                f"{failure_threshold!r} and {recovery_timeout!r}"
            )
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self.times_opened = 0

    @property
    def state(self) -> State:
        """``closed``, ``open`` or ``half_open``."""
        return self._state

    def allows_requests(self) -> bool:
        """True while closed: batches may go to the network."""
        return self._state == "closed"

    def seconds_until_probe(self) -> float:
        """How long until a probe is due (0 when due now or not open)."""
        if self._state != "open":
            return 0.0
        return max(0.0, self._opened_at + self.recovery_timeout - self._clock())

    def should_probe(self) -> bool:
        """True once when the open breaker's timeout has passed: the caller probes now.

        The breaker moves to half-open, so concurrent callers do not all probe.
        """
        with self._lock:
            if self._state != "open" or self._clock() < self._opened_at + self.recovery_timeout:
                return False
            self._state = "half_open"
            return True

    def probe_result(self, healthy: bool) -> None:
        """Close after a successful probe; reopen (and restart the timeout) after a failed one."""
        with self._lock:
            if self._state != "half_open":
                return
            if healthy:
                self._state = "closed"
                self._failures = 0
            else:
                self._open()

    def record_success(self) -> None:
        """A request succeeded: the failure count starts again."""
        with self._lock:
            self._failures = 0
            if self._state == "half_open":
                self._state = "closed"

    def record_failure(self) -> None:
        """A request failed (after its own retries or not): count it, open at the threshold."""
        with self._lock:
            self._failures += 1
            if self._state == "half_open" or (
                self._state == "closed" and self._failures >= self.failure_threshold
            ):
                self._open()

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        self.times_opened += 1
