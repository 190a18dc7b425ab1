"""Head sampling: keep or drop a whole trace, decided once from its trace id.

The decision is a pure function of the trace id (its low 64 bits compared with
``rate × 2⁶⁴``), so every span of a trace, in every process that samples at the
same rate, reaches the same answer without talking to anyone. It is taken when
a root span starts; descendants inherit it through their parent's ``sampled``
flag, and an unsampled trace is carried by non-recording spans that cost next
to nothing.
"""

from __future__ import annotations

__all__ = ["TraceIdRatioSampler"]

_SPACE = 1 << 64


class TraceIdRatioSampler:
    """Keep a trace when the low 64 bits of its id fall below ``rate × 2⁶⁴``."""

    __slots__ = ("bound", "rate")

    def __init__(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"sample rate must be within 0..1, got {rate!r}")
        self.rate = rate
        self.bound = round(rate * _SPACE)

    def __call__(self, trace_id: str) -> bool:
        """True to record the trace with this id."""
        return int(trace_id[16:], 16) < self.bound

    def __repr__(self) -> str:
        return f"TraceIdRatioSampler(rate={self.rate})"
