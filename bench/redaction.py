"""Cost of secret and PII redaction: an ordinary span, prose, and hostile text.

Redaction runs on the pipeline thread over whatever text users record, so a
pattern that backtracks badly on some input would stall delivery. Each hostile
input is measured at two lengths, the second four times the first: a ratio near
4 means linear time; a ratio near 16 means a quadratic pattern to fix.
Run: ``python bench/redaction.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tracerelay.processing.pii import PiiRedactor
from tracerelay.processing.redaction import SecretRedactor
from tracerelay.spans import Span

REDACTORS: dict[str, Callable[[str], str]] = {
    "secret": SecretRedactor().scrub_text,
    "pii mask": PiiRedactor().scrub_text,
    "pii hash": PiiRedactor(mode="hash", salt="bench").scrub_text,
}

HOSTILE: dict[str, str] = {
    "digits": "1",
    "digits and spaces": "1 ",
    "at signs": "a@",
    "dots": "a.",
    "colons": "ab:",
    "key=value": "password=a",
    "json pairs": '"token": "x", ',
    "bearer": "Bearer ",
    "url credentials": "a:",
    "jwt heads": "eyJ",
    "sk- prefixes": "sk-",
    "dashes": "-",
    "plus digits": "+1",
    "card-like groups": "4111 ",
}


class _Tracer:
    def finish(self, span: Span) -> None:
        return None

    def capture(self, value: object) -> object:
        return value


def best_ms(fn: Callable[[], object], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def span_cost() -> None:
    redactor = SecretRedactor()
    attributes = {"rows": 10, "table": "orders", "user": "ada", "http.url": "/api/v1/x", "ok": True}
    spans = []
    for _ in range(20_000):
        span = Span(_Tracer(), "op", "a" * 32, "b" * 16, None, "internal", "span", attributes)  # type: ignore[arg-type]
        span.end()
        spans.append(span)
    started = time.perf_counter_ns()
    for span in spans:
        redactor(span)
    per_span = (time.perf_counter_ns() - started) / len(spans)
    print(f"secret redaction, span with 5 ordinary attributes: {per_span / 1000:.2f} µs")


def main() -> None:
    span_cost()
    print()
    print(f"{'hostile input':<20}{'redactor':<10}{'25k chars':>11}{'100k chars':>12}{'ratio':>7}")
    worst = 0.0
    for name, unit in HOSTILE.items():
        short = unit * (25_000 // len(unit))
        long = unit * (100_000 // len(unit))
        for label, scrub in REDACTORS.items():
            a = best_ms(lambda scrub=scrub, short=short: scrub(short))
            b = best_ms(lambda scrub=scrub, long=long: scrub(long))
            ratio = b / a if a > 0.01 else 4.0
            worst = max(worst, ratio)
            flag = "  <- superlinear" if ratio > 8 else ""
            print(f"{name:<20}{label:<10}{a:>9.2f}ms{b:>10.2f}ms{ratio:>7.1f}{flag}")
    print(f"\nworst growth for 4x the input: {worst:.1f}x (linear is 4)")


if __name__ == "__main__":
    main()
