"""How the server's processes set up the interpreter once everything is imported."""

from __future__ import annotations

import gc

__all__ = ["tune_gc"]

# Collect the youngest generation after this many net allocations (Python's default is
# 700). Ingest allocates a few dozen objects a span, nearly all freed by reference
# counting within the request; at 700 the collector ran every ~20 spans and cost ~12 %
# of a request's time (bench/ingest.py A/B: 32-34 vs 36-39 µs of CPU a span). Garbage
# in reference cycles waits a little longer: at most this many objects.
_YOUNG = 50_000


def tune_gc() -> None:
    """Freeze what is alive now and make collections rarer.

    Everything imported so far lives as long as the process: frozen, it is kept out
    of the collector's full passes, which otherwise walk it all whenever a request
    builds many objects (a 10,000-span trace's tree: ~50 ms a pass on a small
    machine)."""
    gc.freeze()
    gc.set_threshold(_YOUNG, 20, 100)
