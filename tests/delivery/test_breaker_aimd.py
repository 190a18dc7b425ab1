"""Circuit breaker transitions and adaptive limits, on a fake clock, under random sequences."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracerelay.delivery.aimd import Aimd
from tracerelay.delivery.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_probes_after_timeout_and_closes_on_health() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 10.0, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.allows_requests()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allows_requests()
    assert not breaker.should_probe()
    assert breaker.seconds_until_probe() == 10.0
    clock.now += 10
    assert breaker.should_probe()
    assert breaker.state == "half_open"
    assert not breaker.should_probe()  # one probe at a time
    breaker.probe_result(healthy=True)
    assert breaker.state == "closed" and breaker.allows_requests()


def test_a_success_resets_the_count_and_a_failed_probe_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker(2, 5.0, clock=clock)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    clock.now += 5
    assert breaker.should_probe()
    breaker.probe_result(healthy=False)
    assert breaker.state == "open"
    assert breaker.seconds_until_probe() == 5.0
    assert breaker.times_opened == 2


events = st.lists(
    st.sampled_from(["fail", "ok", "tick", "probe_ok", "probe_fail", "should_probe"]),
    max_size=60,
)


@given(st.integers(min_value=1, max_value=5), events)
def test_breaker_matches_a_reference_model(threshold: int, steps: list[str]) -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold, 3.0, clock=clock)
    state, failures, opened = "closed", 0, 0.0
    for step in steps:
        if step == "fail":
            breaker.record_failure()
            failures += 1
            if state == "half_open" or (state == "closed" and failures >= threshold):
                state, opened = "open", clock.now
        elif step == "ok":
            breaker.record_success()
            failures = 0
            if state == "half_open":
                state = "closed"
        elif step == "tick":
            clock.now += 1.0
        elif step == "should_probe":
            due = state == "open" and clock.now >= opened + 3.0
            assert breaker.should_probe() is due
            if due:
                state = "half_open"
        elif state == "half_open":
            healthy = step == "probe_ok"
            breaker.probe_result(healthy)
            if healthy:
                state, failures = "closed", 0
            else:
                state, opened = "open", clock.now
        assert breaker.state == state
        assert breaker.allows_requests() is (state == "closed")


def test_breaker_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0)
    with pytest.raises(ValueError):
        CircuitBreaker(1, 0.0)


def test_aimd_grows_on_steady_round_trips_and_halves_on_backpressure() -> None:
    limit = Aimd(minimum=10, maximum=500, initial=100, step=10)
    for _ in range(5):
        limit.success(0.010)
    assert limit.value == 150
    assert limit.backpressure() == 75
    assert limit.success(0.200) == 37  # twenty times slower than usual: back off early
    for _ in range(100):
        limit.backpressure()
    assert limit.value == 10


def test_aimd_holds_when_round_trips_drift_up_moderately() -> None:
    limit = Aimd(minimum=1, maximum=100, initial=50, tolerance=0.5)
    limit.success(0.010)
    assert limit.success(0.018) == 51  # within tolerance: grow
    assert limit.success(0.025) == 51  # above tolerance, not far above: hold


@given(
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=0, max_value=200),
    st.lists(st.one_of(st.none(), st.floats(min_value=0.0001, max_value=5.0)), max_size=200),
)
def test_aimd_never_leaves_its_bounds(low: int, span: int, signals: list[float | None]) -> None:
    limit = Aimd(minimum=low, maximum=low + span, initial=low)
    for signal in signals:
        value = limit.backpressure() if signal is None else limit.success(signal)
        assert low <= value <= low + span


def test_aimd_judges_round_trips_per_unit_of_work() -> None:
    # A batch twice as large taking twice as long costs the same per event: keep growing.
    limit = Aimd(minimum=10, maximum=1000, initial=100, step=50)
    assert limit.success(0.010, work=100) == 150
    assert limit.success(0.015, work=150) == 200
    assert limit.success(0.020, work=200) == 250
    # Each event suddenly costing ten times as much: the server is straining.
    assert limit.success(0.500, work=250) == 125
