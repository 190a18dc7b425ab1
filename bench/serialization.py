"""Encoding span envelopes to JSON: orjson against msgspec and the standard library, in one run.

The batch is what the SDK really sends: 100 SPEC §2 envelopes of spans recorded
through the public API and processed by the default chain (``tracerelay.testing.capture``),
a mix of an agent root, LLM generations carrying prompt and completion text,
tools with about ten attributes, events and one recorded exception. Each encoder
turns the whole list into UTF-8 JSON bytes:

- ``orjson.dumps``                  what ``tracerelay.serialization`` is built on
- ``msgspec.json.encode``           untyped (plain dicts, no schema)
- ``json.dumps`` (stdlib)           compact separators, ``.encode()`` to get bytes
- ``tracerelay.serialization.dumps``  orjson with the SDK's options and fallback

Each case is timed with ``time.perf_counter`` over LOOPS encodings, REPEATS
times; the table gives µs per span (best and median), the median's ratio to
orjson's, and encoded bytes per span. Run: ``python bench/serialization.py``.
"""

from __future__ import annotations

import gc
import json
import platform
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import msgspec
import orjson

import tracerelay
from tracerelay.serialization import dumps, envelope
from tracerelay.testing import capture

BATCH = 100
LOOPS = 200
REPEATS = 9

_PROMPT = (
    "You are a support assistant for an online shop. Answer briefly and cite the policy. "
    "Customer: my parcel for order #{n} has not arrived after nine days, can I get a refund "
    "or should I wait? I paid for express delivery and the tracking page has not changed. "
)
_COMPLETION = (
    "Sorry about the delay with order #{n}. Express parcels that show no tracking update for "
    "seven days are treated as lost: you can ask for a refund or a free resend right away "
    "(shipping-policy §4.2). Shall I start the refund for you?"
)


def record_batch() -> list[dict[str, Any]]:
    """BATCH envelopes of realistic spans, recorded and processed by the real SDK."""
    with capture() as spans:
        while len(spans) < BATCH:
            n = len(spans)
            with tracerelay.span("handle_ticket", type="agent", attributes=_attributes(n)):
                with tracerelay.span("chat gpt-4o-mini", type="generation", kind="client") as llm:
                    llm.set_input([{"role": "user", "content": _PROMPT.format(n=n)}])
                    llm.set_output(_COMPLETION.format(n=n))
                    llm.record_usage(
                        model="gpt-4o-mini", input_tokens=212, output_tokens=61, cost_usd=0.0000684
                    )
                    llm.set_attributes({"llm.temperature": 0.2, "llm.max_tokens": 512})
                for tool in ("lookup_order", "tracking_status", "refund_policy"):
                    with tracerelay.span(tool, type="tool", attributes=_attributes(n)) as span:
                        span.add_event("cache.miss", {"key": f"{tool}:{n}"})
                try:
                    with tracerelay.span("notify_customer", type="tool", kind="producer"):
                        raise TimeoutError("mail relay did not answer within 2.0 s")
                except TimeoutError:
                    pass
        return [envelope(span) for span in list(spans)[:BATCH]]


def _attributes(n: int) -> dict[str, Any]:
    return {
        "order.id": f"ord_{n:08d}",
        "customer.tier": "gold",
        "http.method": "POST",
        "http.route": "/v1/orders/{id}/refund",
        "http.status_code": 200,
        "retry.count": n % 3,
        "latency.budget_ms": 250.0,
        "feature.flags": ["fast-refund", "express-tracking"],
        "region": "eu-west-1",
        "cache.hit": n % 2 == 0,
    }


def measure(encode: Callable[[Any], bytes], batch: list[dict[str, Any]]) -> tuple[float, float]:
    """(best, median) microseconds per span."""
    for _ in range(20):
        encode(batch)
    samples = []
    gc.disable()
    try:
        for _ in range(REPEATS):
            start = time.perf_counter()
            for _ in range(LOOPS):
                encode(batch)
            samples.append((time.perf_counter() - start) / (LOOPS * len(batch)) * 1e6)
    finally:
        gc.enable()
    return min(samples), statistics.median(samples)


def main() -> None:
    batch = record_batch()
    msgspec_encode = msgspec.json.Encoder().encode
    cases: list[tuple[str, Callable[[Any], bytes]]] = [
        ("orjson.dumps", orjson.dumps),
        ("msgspec.json.encode (untyped)", msgspec_encode),
        (
            "json.dumps (stdlib)",
            lambda v: json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode(),
        ),
        ("tracerelay serialization.dumps", dumps),
    ]
    reference = orjson.loads(orjson.dumps(batch))
    for name, encode in cases:
        assert json.loads(encode(batch)) == reference, f"{name} encodes differently"

    types = sorted({e["payload"]["type"] for e in batch})
    print(f"Encoding one batch of {len(batch)} span envelopes ({', '.join(types)}),")
    print(f"{LOOPS} encodings x {REPEATS} repeats per encoder.")
    print(
        f"Python {platform.python_version()} ({platform.machine()}), "
        f"orjson {version('orjson')}, msgspec {version('msgspec')}"
    )
    print()
    print(
        f"{'encoder':<32}{'best µs/span':>14}{'median µs/span':>16}{'vs orjson':>11}"
        f"{'bytes/span':>12}"
    )
    baseline = None
    for name, encode in cases:
        best, median = measure(encode, batch)
        baseline = baseline or median
        size = len(encode(batch)) / len(batch)
        print(f"{name:<32}{best:>14.3f}{median:>16.3f}{median / baseline:>10.2f}x{size:>12.0f}")


if __name__ == "__main__":
    main()
