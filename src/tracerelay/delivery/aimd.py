"""Adaptive limits: additive increase, multiplicative decrease, steered by round-trip time.

The exporter keeps two of these: the batch size (between ``min_batch_size``
and ``max_batch_size``) and the number of requests in flight. In the spirit of
adaptive request concurrency, a limit grows by ``step`` after a success whose
round-trip time is not above the recent average (by more than ``tolerance``),
holds when the server is slowing down, and is cut by ``factor`` on
backpressure: a 429/503, a timeout, or a round trip far above the average.
The average is an exponentially weighted moving average of round-trip times.

A round trip is compared per unit of work: for the batch size, per event
(``success(rtt, work=len(batch))``), since a larger batch takes longer by
itself; only a rise in the time each event costs says the server is
straining. The sender reports only full batches to the batch-size limit: a
batch cut short by an empty queue says nothing about the limit.

The requests-in-flight limit (``inflight.InFlight``) grows only where another
request can help; elsewhere it reports a round trip with ``grow=False``, which
still keeps the average and still cuts the limit when a round trip is far
above it, and it uses ``step_down`` to give back a step that did not pay.
"""

from __future__ import annotations

import threading

__all__ = ["Aimd"]


class Aimd:
    """One adaptive integer limit within ``[minimum, maximum]``. Thread-safe."""

    def __init__(
        self,
        *,
        minimum: int,
        maximum: int,
        initial: int | None = None,
        step: int = 1,
        factor: float = 0.5,
        tolerance: float = 0.5,
        weight: float = 0.2,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError(f"need 1 <= minimum <= maximum, got {minimum!r}, {maximum!r}")
        if not 0 < factor < 1 or step < 1 or tolerance < 0 or not 0 < weight <= 1:
            raise ValueError("need step >= 1, 0 < factor < 1, tolerance >= 0, 0 < weight <= 1")
        self.minimum = minimum
        self.maximum = maximum
        self.step = step
        self.factor = factor
        self.tolerance = tolerance
        self.weight = weight
        self._value = min(max(initial if initial is not None else minimum, minimum), maximum)
        self._rtt: float | None = None
        self._lock = threading.Lock()

    @property
    def value(self) -> int:
        """The current limit."""
        return self._value

    @property
    def average_rtt(self) -> float | None:
        """The moving average of round-trip times, seconds (None before the first)."""
        return self._rtt

    def success(self, rtt: float, work: float = 1.0, *, grow: bool = True) -> int:
        """Record a successful round trip of ``rtt`` seconds for ``work`` units (events);
        returns the new limit. With ``grow=False`` the limit holds or shrinks, never grows."""
        rtt = rtt / work if work > 0 else rtt
        with self._lock:
            average = self._rtt
            self._rtt = rtt if average is None else average + self.weight * (rtt - average)
            if average is None or rtt <= average * (1 + self.tolerance):
                if grow:
                    self._value = min(self.maximum, self._value + self.step)
            elif rtt > average * (1 + 4 * self.tolerance):
                # Far slower than usual: the server is queueing; back off before it says so.
                self._value = max(self.minimum, int(self._value * self.factor))
            return self._value

    def backpressure(self) -> int:
        """Record an overload signal (429, 503, timeout); returns the new, smaller limit."""
        with self._lock:
            self._value = max(self.minimum, int(self._value * self.factor))
            return self._value

    def step_down(self) -> int:
        """Give back one ``step`` (additive): the limit is not overloading anything, it
        just does not help. Returns the new limit."""
        with self._lock:
            self._value = max(self.minimum, self._value - self.step)
            return self._value
