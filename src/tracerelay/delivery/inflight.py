"""Requests in flight: how many the sender may have out at once, and whether one more helps.

    sender thread ──► may_start(queued, batch)? ──► a request (requests ≤ limit) ──► observe
                                                                                       │
    limit (Aimd, 1 … connection_pool_size, starting at 1) ◄── grow · hold · step down · halve

A second request in flight pays only while the process would otherwise sit
idle during a round trip: a slow or distant server, whose answer takes far
longer than the sender's work to prepare and read a request. When the process
is busy instead (traced code, the pipeline thread, the sender itself), a
request's round trip is long because its thread waits for the GIL, not for
the server, and another sender thread only adds switching: measured on two
cores into a fast local sink, a sender that simply grew its concurrency spent
about 30 % more CPU per span for no more spans per second. So every request
reports its clocks over the same span, from building its body to reading the
answer (``Timing``), and the limiter computes its *slack*:

            wall time − the process's CPU time − the sender's wait for a CPU
    slack = ─────────────────────────────────────────────────────────────────
                   the sender's CPU time + the sender's wait for a CPU

the time the process had nothing to do while the request was out, in units of
what one request costs the sender; a moving average smooths it. The wait for a
CPU (run-queue delay, from ``/proc/thread-self/schedstat`` on Linux, 0
elsewhere) is what a process starved of CPU by others (an overloaded host, a
container's CPU quota) would otherwise pass off as idle time: measured with
both cores taken by other processes, a fast local server's averaged slack
peaked at 10 without it, 5 with it. Then, for a full batch delivered (only
those say anything about the limit):

    average slack ≥ 8, every slot busy and a full batch waiting   grow by one
    average slack < 1                                              one step down
    otherwise                                                      hold
    429 / 503 / timeout                                            halve
    round trip per event far above its average                     halve (``Aimd``)

Against a local server the process is never idle for long: the slack stays
near or below 1 and so does the limit. Against replies taking 50 ms or more it
is 15 or more (a full batch costs the sender 2–4 ms), and the limit climbs
until the process runs out of idle time or the pool of connections is used.
A slot is also taken by a spool replay.

Only a full batch opens a second slot (``may_start``): with one request out,
another starts only when at least a full batch waits, so concurrency never
turns one request of many events into several small ones, which would cost
CPU per event. Not thread-safe by itself: the sender calls it under its lock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tracerelay.delivery.aimd import Aimd
from tracerelay.delivery.policy import Action, Outcome

__all__ = ["InFlight", "Timing", "run_delay"]

_GROW_AT = 8.0  # average slack above which one more request would find idle time to use
_SHRINK_BELOW = 1.0  # below this, the requests already out fill the idle time: give one back
_WEIGHT = 0.25  # of the newest request in the average: one odd round trip does not decide
# A very slow server's slack counts as this: enough for its first answer alone to reach
# _GROW_AT, little enough that a change is seen within a few answers.
_SLACK_CAP = 32.0
_CPU_FLOOR_S = 1e-4  # a clock too coarse to see the request's CPU must not divide by zero
_SCHEDSTAT = "/proc/thread-self/schedstat"
_schedstat_readable = True


def run_delay() -> float:
    """Seconds the calling thread has spent runnable but waiting for a CPU, since it
    started; 0.0 where the kernel does not tell (not Linux, or no schedstat)."""
    global _schedstat_readable
    if not _schedstat_readable:
        return 0.0
    try:
        fd = os.open(_SCHEDSTAT, os.O_RDONLY)  # ~6 µs; twice per full batch
        try:
            fields = os.read(fd, 128).split()
        finally:
            os.close(fd)
        return int(fields[1]) / 1e9
    except (OSError, IndexError, ValueError):
        _schedstat_readable = False
        return 0.0


@dataclass(frozen=True, slots=True)
class Timing:
    """One request's clocks, all over the same span: from building its body to its answer."""

    wall: float
    """Seconds of wall time (``time.monotonic``)."""
    cpu: float
    """CPU seconds of the sending thread (``time.thread_time``): what the request cost it."""
    process_cpu: float
    """CPU seconds of every thread of the process (``time.process_time``)."""
    run_delay: float
    """Seconds the sending thread waited for a CPU while runnable (``run_delay``)."""
    events: int
    full: bool
    """The batch was full (the batch-size limit's size): a short one says nothing of the limits."""


class InFlight:
    """The requests-in-flight count and its adaptive limit; see the module docstring."""

    def __init__(self, maximum: int) -> None:
        self.limit = Aimd(minimum=1, maximum=maximum, initial=1)
        self.requests = 0
        """Requests out now (a batch being delivered, retries included, or a spool replay)."""
        self.slack = 0.0
        """The moving average of requests' slack (see the module docstring)."""

    @property
    def maximum(self) -> int:
        """The most requests ever in flight: ``connection_pool_size``."""
        return self.limit.maximum

    def may_start(self, queued: int, batch: int) -> bool:
        """Whether a request for new events may start now, with ``queued`` events waiting
        and batches of ``batch``: the first always, another for a full batch within the limit."""
        if self.requests == 0:
            return queued > 0
        return self.requests < self.limit.value and queued >= batch

    def has_room(self) -> bool:
        """Whether one more request of any kind (a spool replay) fits within the limit."""
        return self.requests < self.limit.value

    def binding(self, queued: int, batch: int) -> bool:
        """Every slot busy and a full batch waiting: more slots would have been used."""
        return self.requests >= self.limit.value and queued >= batch

    def started(self) -> None:
        """A request took a slot."""
        self.requests += 1

    def finished(self) -> None:
        """A request gave its slot back."""
        self.requests -= 1

    def observe(self, timing: Timing, outcome: Outcome, *, backlog: bool) -> int:
        """Adapt the limit to one request's answer; ``backlog``: ``binding`` was true as it
        ended. Returns the new limit."""
        if outcome.backpressure:
            return self.limit.backpressure()
        if outcome.action is not Action.DONE or not timing.full:
            return self.limit.value
        idle = max(0.0, timing.wall - timing.process_cpu - timing.run_delay)
        cost = max(timing.cpu + timing.run_delay, _CPU_FLOOR_S)
        slack = min(idle / cost, _SLACK_CAP)
        self.slack += _WEIGHT * (slack - self.slack)
        grow = backlog and self.slack >= _GROW_AT
        value = self.limit.success(timing.wall, timing.events, grow=grow)
        if self.slack < _SHRINK_BELOW and value > 1:
            value = self.limit.step_down()
        return value
