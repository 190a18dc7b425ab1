"""Per-key token buckets, by themselves and in front of the ingest endpoints."""

from __future__ import annotations

import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.server.support import running_server
from tests.server.test_ingest import span_event
from tracerelay.server.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@given(
    steps=st.lists(
        st.tuples(st.floats(0, 5), st.integers(1, 50), st.sampled_from(["a", "b"])),
        max_size=60,
    )
)
def test_a_key_never_gets_more_than_its_burst_plus_its_rate(
    steps: list[tuple[float, int, str]],
) -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=40, clock=clock)
    admitted = {"a": 0, "b": 0}
    for pause, cost, key in steps:
        clock.now += pause
        if limiter.admit(key, cost) == 0.0:
            admitted[key] += min(cost, 40)
    for count in admitted.values():
        assert count <= 40 + 10 * clock.now + 1e-6


def test_a_refused_request_is_told_how_long_to_wait_and_then_passes() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=20, clock=clock)
    assert limiter.admit("k", 20) == 0.0
    wait = limiter.admit("k", 15)
    assert wait == 1.5 and limiter.retry_after(wait) == "2"
    clock.now += wait
    assert limiter.admit("k", 15) == 0.0
    assert limiter.admit("other", 20) == 0.0  # buckets are per key


def test_the_server_answers_429_with_retry_after_past_a_keys_rate(tmp_path: Path) -> None:
    with running_server(tmp_path, rate_limit_events_per_s=20.0, rate_limit_burst=30) as server:
        events = [span_event("c3" * 16, f"{i:016x}") for i in range(1, 26)]
        with server.client() as client:
            assert client.post("/v1/telemetry/batch", json={"events": events}).status_code == 200
            more = [span_event("c3" * 16, f"{i:016x}") for i in range(26, 46)]
            refused = client.post("/v1/telemetry/batch", json={"events": more})
            assert refused.status_code == 429 and refused.json()["code"] == "TR-INGEST-RATE"
            wait = int(refused.headers["Retry-After"])
            assert 1 <= wait <= 2
            time.sleep(wait)
            assert client.post("/v1/telemetry/batch", json={"events": more}).status_code == 200
        assert server.trace("c3" * 16)["span_count"] == 45
