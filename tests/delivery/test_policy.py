"""The delivery policy: which answer leads to which action, and how long to wait."""

from __future__ import annotations

import email.utils
import random

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracerelay.delivery.policy import (
    MAX_RETRY_AFTER_S,
    Action,
    Backoff,
    classify,
    classify_error,
    parse_retry_after,
    retryable_events,
    split_in_halves,
)

NOW = 1_767_225_600.0


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (200, Action.DONE),
        (202, Action.DONE),
        (409, Action.DONE),
        (207, Action.PARTIAL),
        (413, Action.SPLIT),
        (429, Action.RETRY),
        (503, Action.RETRY),
        (500, Action.RETRY),
        (502, Action.RETRY),
        (504, Action.RETRY),
        (408, Action.RETRY),
        (599, Action.RETRY),
        (400, Action.REJECT),
        (401, Action.REJECT),
        (403, Action.REJECT),
        (404, Action.REJECT),
        (422, Action.REJECT),
    ],
)
def test_each_status_leads_to_its_action(status: int, action: Action) -> None:
    assert classify(status, {}, now=NOW).action is action


def test_rejections_carry_a_code_and_a_fix() -> None:
    codes = {s: classify(s, {}, now=NOW) for s in (400, 401, 403, 404, 422)}
    assert codes[401].code == "TR-AUTH-REJECTED" and "api_key" in codes[401].fix
    assert codes[403].code == "TR-AUTH-SCOPE" and "ingest" in codes[403].fix
    assert codes[404].code == "TR-NET-ENDPOINT"
    assert codes[400].code == "TR-NET-BAD-REQUEST"
    assert codes[422].code == "TR-NET-REJECTED" and "422" in codes[422].message


def test_overload_honours_retry_after_and_signals_backpressure() -> None:
    outcome = classify(429, {"Retry-After": "7"}, now=NOW)
    assert (outcome.retry_after, outcome.backpressure) == (7.0, True)
    date = email.utils.formatdate(NOW + 30, usegmt=True)
    assert classify(503, {"retry-after": date}, now=NOW).retry_after == pytest.approx(30)
    assert classify(503, {}, now=NOW).retry_after is None
    assert classify(500, {}, now=NOW).backpressure is False


def test_transport_errors_are_retried_timeouts_as_backpressure() -> None:
    timeout = classify_error(httpx.ReadTimeout("slow"))
    reset = classify_error(httpx.RemoteProtocolError("reset"))
    refused = classify_error(httpx.ConnectError("refused"))
    assert {timeout.action, reset.action, refused.action} == {Action.RETRY}
    assert timeout.backpressure and not reset.backpressure and not refused.backpressure


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (" 5 ", 5.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("999999", MAX_RETRY_AFTER_S),
        ("", None),
        ("soon", None),
        ("nan", None),
        (None, None),
        (email.utils.formatdate(NOW - 100, usegmt=True), 0.0),
        ("Wed, 21 Oct 2015 07:28:00", None),  # no zone: not an HTTP date
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@given(st.integers(min_value=0, max_value=10_000), st.floats(min_value=0.01, max_value=10))
def test_backoff_stays_within_its_growing_capped_bound(attempt: int, base: float) -> None:
    backoff = Backoff(base, cap=30.0, rng=random.Random(attempt))
    bound = backoff.bound(attempt)
    assert bound == min(30.0, base * 2.0 ** min(attempt, 64)) or bound == 30.0
    assert backoff.bound(attempt + 1) >= bound
    for _ in range(20):
        assert 0.0 <= backoff.delay(attempt) <= bound
    assert backoff.delay(attempt, retry_after=4.0) == 4.0


def test_backoff_jitter_spreads_clients() -> None:
    delays = {round(Backoff(1.0, rng=random.Random(seed)).delay(3), 3) for seed in range(50)}
    assert len(delays) > 40  # full jitter: fifty clients do not retry in lockstep


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(0.0)
    with pytest.raises(ValueError):
        Backoff(5.0, cap=1.0)


@given(st.lists(st.integers(), max_size=200))
def test_split_keeps_every_item_in_order(items: list[int]) -> None:
    left, right = split_in_halves(items)
    assert list(left) + list(right) == items
    assert 0 <= len(left) - len(right) <= 1


@given(st.lists(st.integers(), min_size=1, max_size=300))
def test_splitting_down_to_single_events_terminates_and_loses_nothing(items: list[int]) -> None:
    pending, singles, rounds = [items], [], 0
    while pending:
        rounds += 1
        batch = pending.pop()
        if len(batch) == 1:
            singles.append(batch[0])
            continue
        left, right = split_in_halves(batch)
        pending.extend([list(right), list(left)])
    assert singles == items
    assert rounds == 2 * len(items) - 1


@given(
    st.lists(st.text(min_size=1, max_size=4), unique=True, max_size=30),
    st.data(),
)
def test_207_resends_exactly_the_retryable_events(ids: list[str], data: st.DataObject) -> None:
    events = [{"event_id": i, "n": n} for n, i in enumerate(ids)]
    marks = {i: data.draw(st.sampled_from(["ok", "retry", "final"])) for i in ids}
    errors = [
        {"event_id": i, "error": "x", "retryable": mark == "retry"}
        for i, mark in marks.items()
        if mark != "ok"
    ]
    resend, final = retryable_events(events, errors)
    assert [e["event_id"] for e in resend] == [i for i in ids if marks[i] == "retry"]
    assert [e["event_id"] for e in final] == [i for i in ids if marks[i] == "final"]


def test_a_malformed_207_error_list_resends_nothing() -> None:
    events = [{"event_id": "a"}]
    assert retryable_events(events, None) == ([], [])
    assert retryable_events(events, [None, {"retryable": True}, "x"]) == ([], [])
