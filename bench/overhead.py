"""Per-span cost of tracing a call: tracerelay against the OpenTelemetry SDK, in one run.

Each case runs a small function that sets two attributes, N times, and reports
nanoseconds per span over the bare call of the same work:

- bare call                 the function undecorated (the baseline)
- tracerelay no-op          decorated, tracing never initialised
- tracerelay flat           ``@tracerelay.trace``, real pipeline, exporter that discards
- tracerelay nested (3)     three decorated functions calling each other; cost per span
- OpenTelemetry flat        ``start_as_current_span``, BatchSpanProcessor, exporter that discards
- OpenTelemetry nested (3)  the same, three deep

"caller" is the wall time of the loop (what traced code feels); "cpu" adds the
background processing and export up to a final flush (process CPU time, both
threads), which is what the machine pays. Run: ``python bench/overhead.py [N]``.
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


def measure(
    loop: Callable[[int], None], n: int, flush: Callable[[], object]
) -> tuple[float, float]:
    """(caller ns per iteration, cpu ns per iteration including flush), best of REPEATS."""
    walls, cpus = [], []
    loop(min(n, 2000))  # warm up caches and lazily started threads
    flush()
    for _ in range(REPEATS):
        gc.collect()
        cpu0, t0 = time.process_time_ns(), time.perf_counter_ns()
        loop(n)
        t1 = time.perf_counter_ns()
        flush()
        cpu1 = time.process_time_ns()
        walls.append((t1 - t0) / n)
        cpus.append((cpu1 - cpu0) / n)
    return min(walls), statistics.median(cpus)


def bare_case(n: int) -> tuple[float, float]:
    def work(x: int) -> int:
        a = ("rows", x)
        b = ("table", "orders")
        return len(a) + len(b)

    def loop(k: int) -> None:
        for i in range(k):
            work(i)

    return measure(loop, n, lambda: None)


def tracerelay_cases(n: int) -> dict[str, tuple[float, float]]:
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


def otel_cases(n: int) -> dict[str, tuple[float, float]]:
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
    bare_wall, bare_cpu = bare_case(n)
    results = tracerelay_cases(n)
    results.update(otel_cases(n))
    print(f"per-span cost, {n} spans per case, best of {REPEATS} (python {sys.version.split()[0]})")
    print(f"{'case':<26}{'caller ns':>11}{'net ns':>9}{'cpu ns':>9}")
    print(f"{'bare call':<26}{bare_wall:>11.0f}{0:>9.0f}{bare_cpu:>9.0f}")
    net: dict[str, float] = {}
    for name, (wall, cpu) in results.items():
        net[name] = wall - bare_wall
        print(f"{name:<26}{wall:>11.0f}{net[name]:>9.0f}{cpu:>9.0f}")
    print()
    for shape in ("flat", "nested (3)"):
        ours, theirs = net[f"tracerelay {shape}"], net[f"OpenTelemetry {shape}"]
        cpu_ours, cpu_theirs = (
            results[f"tracerelay {shape}"][1],
            results[f"OpenTelemetry {shape}"][1],
        )
        print(
            f"{shape:<11} tracerelay/OpenTelemetry caller cost: {ours / theirs:.3f} "
            f"(1/{theirs / ours:.1f}); cpu incl. background: {cpu_ours / cpu_theirs:.3f} "
            f"(1/{cpu_theirs / cpu_ours:.1f})"
        )
    print(f"no-op path: {net['tracerelay no-op']:.0f} ns over a bare call (target <= 300 ns)")


if __name__ == "__main__":
    main()
