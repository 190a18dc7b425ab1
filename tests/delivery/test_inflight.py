"""The requests-in-flight limit: it grows only where another request finds idle time.

The timings below are the shapes measured on a 2-core machine (see
``tracerelay.delivery.inflight``): into a fast local server a 500-event request
takes ~8 ms of wall time with the process busy for most of it (or all of it,
while traced code runs), against a slow server ~200 ms with the process idle.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracerelay.delivery.aimd import Aimd
from tracerelay.delivery.inflight import InFlight, Timing
from tracerelay.delivery.policy import Action, Outcome

DONE = Outcome(Action.DONE)
TOO_MANY = Outcome(Action.RETRY, retry_after=1.0, backpressure=True)
FAILED = Outcome(Action.RETRY)

# (wall, sender thread CPU, process CPU), seconds, for a full batch of 500 events.
FAST_DRAIN = (0.008, 0.0035, 0.0036)  # the server works on the other core meanwhile
FAST_BUSY = (0.030, 0.004, 0.030)  # traced code and the pipeline hold the GIL
SLOW = (0.200, 0.0034, 0.005)


def timing(
    clocks: tuple[float, float, float], events: int = 500, full: bool = True, delay: float = 0.0
) -> Timing:
    wall, cpu, process = clocks
    return Timing(
        wall=wall, cpu=cpu, process_cpu=process, run_delay=delay, events=events, full=full
    )


def test_a_fast_server_keeps_one_request_in_flight_even_with_a_backlog() -> None:
    limit = InFlight(10)
    for clocks in [FAST_DRAIN] * 50 + [FAST_BUSY] * 50 + [FAST_DRAIN] * 50:
        assert limit.observe(timing(clocks), DONE, backlog=True) == 1
    assert limit.slack < 4


def test_a_slow_server_grows_the_limit_while_it_binds_up_to_the_pool() -> None:
    limit = InFlight(10)
    values = [limit.observe(timing(SLOW), DONE, backlog=True) for _ in range(15)]
    assert values[0] == 2  # the first slow round trip is enough
    assert values == sorted(values) and values[-1] == 10
    # Without a backlog there is nothing to use another slot for: the limit holds.
    held = InFlight(10)
    assert {held.observe(timing(SLOW), DONE, backlog=False) for _ in range(10)} == {1}


def test_a_process_starved_of_cpu_is_not_mistaken_for_an_idle_one() -> None:
    # Other processes hold the CPUs: the sender waited 20 ms to run, and the process
    # used little CPU, not because it had nothing to do but because it could not.
    starved = (0.060, 0.003, 0.010)
    limit = InFlight(10)
    assert {limit.observe(timing(starved, delay=0.020), DONE, backlog=True) for _ in range(30)} == {
        1
    }
    # The same clocks without the wait for a CPU would pass for a slow server.
    naive = InFlight(10)
    assert max(naive.observe(timing(starved), DONE, backlog=True) for _ in range(30)) > 1


def test_the_limit_comes_down_when_it_stops_paying_or_the_server_pushes_back() -> None:
    limit = InFlight(10)
    for _ in range(20):
        limit.observe(timing(SLOW), DONE, backlog=True)
    assert limit.limit.value == 10
    assert limit.observe(timing(SLOW), TOO_MANY, backlog=True) == 5  # 429/503/timeout: halve
    # The process busy for whole round trips: more requests cannot use idle time that is
    # not there. Once the averaged slack has come down (a few round trips), the limit
    # steps down to 1, one step per answer.
    values = [limit.observe(timing(FAST_BUSY), DONE, backlog=True) for _ in range(40)]
    peak = values.index(max(values))
    assert peak < 6 and values[-1] == 1
    assert values[peak:] == sorted(values[peak:], reverse=True)


def test_a_round_trip_far_above_its_average_halves_the_limit() -> None:
    limit = InFlight(10)
    for _ in range(10):
        limit.observe(timing(SLOW), DONE, backlog=True)
    assert limit.limit.value == 10
    # Ten times slower per event than usual, the process still idle: the server queues.
    assert limit.observe(timing((2.0, 0.0034, 0.005)), DONE, backlog=True) == 5


def test_short_batches_and_failures_do_not_move_the_limit() -> None:
    limit = InFlight(10)
    assert limit.observe(timing(SLOW, events=3, full=False), DONE, backlog=True) == 1
    assert limit.observe(timing(SLOW), FAILED, backlog=True) == 1
    assert limit.slack == 0.0


def test_a_second_request_needs_a_full_batch_and_room() -> None:
    limit = InFlight(3)
    assert not limit.may_start(0, 100)
    assert limit.may_start(1, 100)  # the first request takes whatever waits
    limit.started()
    assert not limit.may_start(99, 100)  # another would split what could go as one
    assert not limit.may_start(500, 100)  # the limit is 1
    for _ in range(3):
        limit.observe(timing(SLOW), DONE, backlog=True)
    assert limit.may_start(100, 100)
    limit.started()
    limit.started()
    assert not limit.may_start(10_000, 100) and not limit.has_room()


def test_aimd_without_growth_holds_and_steps_down_additively() -> None:
    limit = Aimd(minimum=1, maximum=10, initial=4, step=1)
    assert limit.success(0.01, grow=False) == 4
    assert limit.success(0.01, grow=False) == 4
    assert limit.step_down() == 3
    assert limit.success(0.5, grow=False) == 1  # far above the average: still cut


signals = st.one_of(
    st.just("start"),
    st.just("finish"),
    st.tuples(
        st.sampled_from([DONE, TOO_MANY, FAILED]),
        st.floats(min_value=1e-4, max_value=5.0),  # wall
        st.floats(min_value=0.0, max_value=0.1),  # sender CPU
        st.floats(min_value=0.0, max_value=5.0),  # process CPU
        st.integers(min_value=1, max_value=1000),  # events
        st.booleans(),  # full
        st.booleans(),  # backlog
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=100), st.lists(signals, max_size=300))
def test_the_limit_stays_in_bounds_and_no_request_starts_beyond_it(
    maximum: int, steps: list[object]
) -> None:
    limit = InFlight(maximum)
    for step in steps:
        if step == "start":
            if limit.may_start(10_000, 100):
                assert limit.requests == 0 or limit.requests < limit.limit.value
                limit.started()
        elif step == "finish":
            if limit.requests:
                limit.finished()
        else:
            assert isinstance(step, tuple)
            outcome, wall, cpu, process, events, full, backlog = step
            timed = Timing(
                wall=wall, cpu=cpu, process_cpu=process, run_delay=0.0, events=events, full=full
            )
            value = limit.observe(timed, outcome, backlog=backlog)
            assert 1 <= value <= maximum
        assert 1 <= limit.limit.value <= maximum
        assert 0 <= limit.requests <= maximum


@pytest.mark.parametrize("maximum", [1, 2])
def test_a_pool_of_one_or_two_caps_the_limit(maximum: int) -> None:
    limit = InFlight(maximum)
    for _ in range(10):
        limit.observe(timing(SLOW), DONE, backlog=True)
    assert limit.limit.value == maximum
