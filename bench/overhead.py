"""Per-span cost of tracing a call: tracerelay against the OpenTelemetry SDK, in one run.

Each case runs a small function that sets two attributes, N times, and reports
nanoseconds per span over the bare call of the same work:

- bare call                 the function undecorated (the baseline)
- tracerelay no-op          decorated, tracing never initialised
- tracerelay flat           ``@tracerelay.trace``, real pipeline, exporter that discards
- tracerelay nested (3)     three decorated functions calling each other; cost per span
- OpenTelemetry flat        ``start_as_current_span``, BatchSpanProcessor, exporter that discards
- OpenTelemetry nested (3)  the same, three deep

Three figures per case, each in nanoseconds per span over the bare call:

- caller  CPU time of the calling thread alone (``thread_time``): what the traced
          code itself pays; the SDKs' background threads are not in it;
- total   CPU time of the whole process up to a final flush (``process_time``):
          the caller plus every background thread — what the machine pays;
- wall    elapsed time of the loop: with both threads sharing one GIL in a loop
          that does nothing else, background work shows up here too.

tracerelay does its processing (validation, limits, redaction, event ids) on its
pipeline thread; OpenTelemetry does almost all of its work in the caller, so
"caller" and "total" differ much more for tracerelay. Run:
``python bench/overhead.py [N]``.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import tracerelay
from tracerelay.export import ExportResult

REPEATS = 5


class Discard:
    """A tracerelay exporter that drops every batch."""

    def export(self, records: Sequence[Any]) -> ExportResult:
        return ExportResult.SUCCESS

    def force_flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self) -> None:
        return None


Figures = tuple[float, float, float]  # caller, total, wall: ns per iteration


def measure(loop: Callable[[int], None], n: int, flush: Callable[[], object]) -> Figures:
    """Median over REPEATS of (caller CPU, total CPU including flush, wall) per iteration."""
    callers, totals, walls = [], [], []
    loop(min(n, 2000))  # warm up caches and lazily started threads
    flush()
    for _ in range(REPEATS):
        gc.collect()
        cpu0, thread0, t0 = time.process_time_ns(), time.thread_time_ns(), time.perf_counter_ns()
        loop(n)
        thread1, t1 = time.thread_time_ns(), time.perf_counter_ns()
        flush()
        cpu1 = time.process_time_ns()
        callers.append((thread1 - thread0) / n)
        totals.append((cpu1 - cpu0) / n)
        walls.append((t1 - t0) / n)
    return statistics.median(callers), statistics.median(totals), statistics.median(walls)


def bare_case(n: int) -> Figures:
    def work(x: int) -> int:
        a = ("rows", x)
        b = ("table", "orders")
        return len(a) + len(b)

    def loop(k: int) -> None:
        for i in range(k):
            work(i)

    return measure(loop, n, lambda: None)


def tracerelay_cases(n: int) -> dict[str, Figures]:
    @tracerelay.trace
    def work(x: int) -> int:
        tracerelay.set_attribute("rows", x)
        tracerelay.set_attribute("table", "orders")
        return x

    @tracerelay.trace
    def inner(x: int) -> int:
        tracerelay.set_attribute("rows", x)
        tracerelay.set_attribute("table", "orders")
        return x

    @tracerelay.trace
    def middle(x: int) -> int:
        tracerelay.set_attribute("rows", x)
        tracerelay.set_attribute("table", "orders")
        return inner(x)

    @tracerelay.trace
    def outer(x: int) -> int:
        tracerelay.set_attribute("rows", x)
        tracerelay.set_attribute("table", "orders")
        return middle(x)

    def flat(k: int) -> None:
        for i in range(k):
            work(i)

    def nested(k: int) -> None:
        for i in range(k // 3):
            outer(i)

    results = {"tracerelay no-op": measure(flat, n, lambda: None)}
    tracerelay.init(service="bench", exporters=[Discard()], environ={})
    results["tracerelay flat"] = measure(flat, n, lambda: tracerelay.flush(timeout=60))
    results["tracerelay nested (3)"] = measure(
        nested, n - n % 3, lambda: tracerelay.flush(timeout=60)
    )
    client = tracerelay.get_client()
    dropped = client.metrics()["items_dropped"] if client else 0
    tracerelay.shutdown()
    if dropped:
        print(f"note: tracerelay dropped {dropped} spans (queue full)")
    return results


def otel_cases(n: int) -> dict[str, Figures]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class OtelDiscard(SpanExporter):  # type: ignore[misc]
        def export(self, spans: Any) -> Any:
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            return None

    provider = TracerProvider()
    processor = BatchSpanProcessor(OtelDiscard())
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")

    def work(x: int) -> int:
        with tracer.start_as_current_span("work") as span:
            span.set_attribute("rows", x)
            span.set_attribute("table", "orders")
            return x

    def inner(x: int) -> int:
        with tracer.start_as_current_span("inner") as span:
            span.set_attribute("rows", x)
            span.set_attribute("table", "orders")
            return x

    def middle(x: int) -> int:
        with tracer.start_as_current_span("middle") as span:
            span.set_attribute("rows", x)
            span.set_attribute("table", "orders")
            return inner(x)

    def outer(x: int) -> int:
        with tracer.start_as_current_span("outer") as span:
            span.set_attribute("rows", x)
            span.set_attribute("table", "orders")
            return middle(x)

    def flat(k: int) -> None:
        for i in range(k):
            work(i)

    def nested(k: int) -> None:
        for i in range(k // 3):
            outer(i)

    def flush() -> None:
        provider.force_flush(timeout_millis=60_000)

    results = {
        "OpenTelemetry flat": measure(flat, n, flush),
        "OpenTelemetry nested (3)": measure(nested, n - n % 3, flush),
    }
    provider.shutdown()
    return results


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    bare = bare_case(n)
    results = tracerelay_cases(n)
    results.update(otel_cases(n))
    version = sys.version.split()[0]
    print(f"per-span cost, {n} spans per case, median of {REPEATS} (python {version})")
    print("ns per span over the bare call; the bare call itself is the first row, absolute")
    print(f"{'case':<26}{'caller':>9}{'total':>9}{'wall':>9}")
    print(f"{'bare call':<26}{bare[0]:>9.0f}{bare[1]:>9.0f}{bare[2]:>9.0f}")
    net: dict[str, Figures] = {}
    for name, figures in results.items():
        caller, total, wall = (f - b for f, b in zip(figures, bare, strict=True))
        net[name] = (caller, total, wall)
        print(f"{name:<26}{caller:>9.0f}{total:>9.0f}{wall:>9.0f}")
    print()
    print("tracerelay / OpenTelemetry (lower is better)")
    for shape in ("flat", "nested (3)"):
        ours, theirs = net[f"tracerelay {shape}"], net[f"OpenTelemetry {shape}"]
        parts = [
            f"{label} {o / t:.3f} (1/{t / o:.1f})"
            for label, o, t in zip(("caller", "total", "wall"), ours, theirs, strict=True)
        ]
        print(f"  {shape:<11} " + "   ".join(parts))
    print(f"no-op path: {net['tracerelay no-op'][2]:.0f} ns over a bare call (target <= 300 ns)")


if __name__ == "__main__":
    main()
