"""Head sampling keeps or drops whole traces, consistently, and still propagates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tracerelay
from tracerelay.ids import new_trace_id
from tracerelay.processing.sampling import TraceIdRatioSampler
from tracerelay.testing import capture


def test_rate_zero_records_nothing_but_context_still_flows() -> None:
    with capture(sample_rate=0.0) as spans:
        with tracerelay.span("root") as root, tracerelay.span("child") as child:
            headers = tracerelay.inject({})
        tracerelay.score("s", 1.0)
    assert spans == []
    assert not root.is_recording() and child.parent_span_id == root.span_id
    assert child.trace_id == root.trace_id
    assert headers["traceparent"].endswith("-00")


def test_traces_are_kept_or_dropped_whole() -> None:
    with capture(sample_rate=0.5) as spans:
        for _ in range(300):
            with tracerelay.span("root"), tracerelay.span("a"), tracerelay.span("b"):
                pass
    per_trace: dict[str, int] = {}
    for span in spans:
        per_trace[span.trace_id] = per_trace.get(span.trace_id, 0) + 1
    assert set(per_trace.values()) == {3}
    # 300 fair coin flips: 99.9999 % of runs land within 150 ± 60.
    assert 90 <= len(per_trace) <= 210


@given(st.floats(min_value=0.0, max_value=1.0))
def test_decision_is_a_pure_function_of_the_trace_id(rate: float) -> None:
    a, b = TraceIdRatioSampler(rate), TraceIdRatioSampler(rate)
    ids = [new_trace_id() for _ in range(50)]
    assert [a(t) for t in ids] == [b(t) for t in ids]


@given(st.floats(min_value=0.0, max_value=1.0), st.floats(min_value=0.0, max_value=1.0))
def test_a_higher_rate_keeps_a_superset(low: float, high: float) -> None:
    low, high = min(low, high), max(low, high)
    ids = [new_trace_id() for _ in range(50)]
    kept_low = {t for t in ids if TraceIdRatioSampler(low)(t)}
    kept_high = {t for t in ids if TraceIdRatioSampler(high)(t)}
    assert kept_low <= kept_high


def test_rate_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError):
        TraceIdRatioSampler(1.5)
