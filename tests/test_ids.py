"""Trace, span and event ids: the right shape, unique, fork-safe, and valid ULIDs.

Every event id is parsed with python-ulid, the reference implementation, rather
than with a re-implementation of the encoding.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ulid import ULID

from tracerelay import ids
from tracerelay.ids import (
    INVALID_SPAN_ID,
    INVALID_TRACE_ID,
    is_valid_span_id,
    is_valid_trace_id,
    new_event_id,
    new_span_id,
    new_trace_id,
)

MAX_MS = (1 << 48) - 1  # the last millisecond a ULID can hold, in the year 10889
HEX = "0123456789abcdef"
CROCKFORD_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")


# --- trace and span ids -----------------------------------------------------------------


def test_trace_and_span_ids_are_lowercase_hex_of_the_w3c_length() -> None:
    for _ in range(1000):
        trace_id, span_id = new_trace_id(), new_span_id()
        assert re.fullmatch(r"[0-9a-f]{32}", trace_id), trace_id
        assert re.fullmatch(r"[0-9a-f]{16}", span_id), span_id
        assert is_valid_trace_id(trace_id)
        assert is_valid_span_id(span_id)


def test_ids_are_never_all_zero_even_when_the_generator_draws_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ids, "_bits", lambda bits: 0)
    assert new_trace_id() != INVALID_TRACE_ID
    assert new_span_id() != INVALID_SPAN_ID
    assert is_valid_trace_id(new_trace_id())
    assert is_valid_span_id(new_span_id())


def test_ids_are_unique_over_many_draws() -> None:
    n = 50_000
    assert len({new_trace_id() for _ in range(n)}) == n
    assert len({new_span_id() for _ in range(n)}) == n
    assert len({new_event_id() for _ in range(n)}) == n


def test_ids_use_every_hex_digit_in_every_position() -> None:
    # A constant or truncated field would show up as a position with few digits.
    draws = [new_trace_id() for _ in range(2000)]
    for position in range(32):
        assert {d[position] for d in draws} == set(HEX), position


def test_random_seed_does_not_repeat_ids() -> None:
    random.seed(1234)
    first = [new_trace_id(), new_span_id(), new_event_id(1.0)]
    random.seed(1234)
    second = [new_trace_id(), new_span_id(), new_event_id(1.0)]
    assert all(a != b for a, b in zip(first, second, strict=True))


def _fork_and_draw(count: int) -> list[str]:
    """Fork a child that draws ``count`` trace and span ids and sends them back."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python warns about forking a process that has threads; the child only draws ids.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            drawn = [new_trace_id() for _ in range(count)] + [new_span_id() for _ in range(count)]
            os.write(write_end, "\n".join(drawn).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return b"".join(chunks).decode().split("\n")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    random.seed(7)  # the user's seed must not matter either
    child = _fork_and_draw(50)
    parent = [new_trace_id() for _ in range(50)] + [new_span_id() for _ in range(50)]
    assert len(child) == 100
    assert all(is_valid_trace_id(x) for x in child[:50])
    assert all(is_valid_span_id(x) for x in child[50:])
    # Without the reseed the child's draws would equal the parent's next ones.
    assert not set(child) & set(parent)
    random.seed(7)
    sibling = _fork_and_draw(50)
    assert not set(sibling) & set(child)


# --- is_valid_trace_id / is_valid_span_id -----------------------------------------------


@given(st.text(alphabet=HEX, min_size=32, max_size=32))
def test_any_32_lowercase_hex_digits_but_zeros_is_a_valid_trace_id(text: str) -> None:
    assert is_valid_trace_id(text) == (text != INVALID_TRACE_ID)
    assert not is_valid_trace_id(text.upper()) or text.upper() == text


@given(st.text(alphabet=HEX, min_size=16, max_size=16))
def test_any_16_lowercase_hex_digits_but_zeros_is_a_valid_span_id(text: str) -> None:
    assert is_valid_span_id(text) == (text != INVALID_SPAN_ID)
    assert not is_valid_span_id(text.upper()) or text.upper() == text


@given(st.text(alphabet=HEX).filter(lambda s: len(s) not in (16, 32)))
def test_other_lengths_are_invalid(text: str) -> None:
    assert not is_valid_trace_id(text)
    assert not is_valid_span_id(text)


@given(st.text(min_size=32, max_size=32).filter(lambda s: not set(s) <= set(HEX)))
def test_other_characters_are_invalid_trace_ids(text: str) -> None:
    assert not is_valid_trace_id(text)


@pytest.mark.parametrize(
    "value",
    [
        "a" * 32 + "\n",
        "\n" + "a" * 32,
        " " + "a" * 31,
        "A" * 32,
        "g" * 32,
        "a" * 31,
        "a" * 33,
        INVALID_TRACE_ID,
        b"a" * 32,
        int("a" * 32, 16),
        None,
    ],
)
def test_invalid_trace_ids(value: object) -> None:
    assert not is_valid_trace_id(value)


@pytest.mark.parametrize(
    "value", ["b" * 16 + "\n", "B" * 16, "b" * 15, INVALID_SPAN_ID, b"b" * 16, None]
)
def test_invalid_span_ids(value: object) -> None:
    assert not is_valid_span_id(value)


# --- event ids --------------------------------------------------------------------------


def _ms(event_id: str) -> int:
    return int(ULID.from_str(event_id).milliseconds)


def test_event_ids_parse_as_ulids_and_round_trip() -> None:
    for timestamp in (None, 0.0, 1.0, time.time(), MAX_MS / 1000):
        event_id = new_event_id(timestamp)
        assert len(event_id) == 26
        assert CROCKFORD_ULID.fullmatch(event_id), event_id
        assert str(ULID.from_str(event_id)) == event_id


@settings(max_examples=300)
@given(st.integers(0, MAX_MS))
def test_the_time_part_is_the_given_millisecond(ms: int) -> None:
    event_id = new_event_id(ms / 1000)
    assert str(ULID.from_str(event_id)) == event_id
    assert _ms(event_id) == ms


@pytest.mark.parametrize("ms", [1001, 1003, 68_882_007_157_441, 276_892_629_448_108])
def test_milliseconds_that_do_not_multiply_back_exactly(ms: int) -> None:
    # 1.001 * 1000 == 1000.9999999999999, yet the id must say 1001 ms.
    assert _ms(new_event_id(ms / 1000)) == ms


@settings(max_examples=300)
@given(st.floats(0, MAX_MS / 1000, allow_nan=False))
def test_the_time_part_is_the_millisecond_the_timestamp_falls_in(timestamp: float) -> None:
    ms = _ms(new_event_id(timestamp))
    assert ms / 1000 <= timestamp < (ms + 1) / 1000


def test_the_default_timestamp_is_now() -> None:
    before = time.time()
    event_id = new_event_id()
    after = time.time()
    assert int(before * 1000) <= _ms(event_id) <= int(after * 1000) + 1


@pytest.mark.parametrize("timestamp", [-0.001, -1.0, -1e9, (MAX_MS + 1) / 1000, 1e15])
def test_timestamps_a_ulid_cannot_hold_are_refused(timestamp: float) -> None:
    with pytest.raises(ValueError, match="out of range"):
        new_event_id(timestamp)


def test_a_negative_timestamp_is_refused_by_a_fresh_process() -> None:
    # The first call of a process has nothing cached to compare with.
    code = (
        "from tracerelay.ids import new_event_id\n"
        "try:\n    print(repr(new_event_id(-0.001)))\n"
        "except ValueError:\n    print('refused')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == "refused"


@given(st.lists(st.integers(0, MAX_MS), min_size=2, max_size=30))
def test_event_ids_sort_by_time(times: list[int]) -> None:
    event_ids = [new_event_id(ms / 1000) for ms in times]
    assert [_ms(e) for e in sorted(event_ids)] == sorted(times)


def test_event_ids_of_one_millisecond_differ() -> None:
    same = [new_event_id(1_700_000_000.5) for _ in range(10_000)]
    assert len(set(same)) == len(same)
    assert {e[:10] for e in same} == {same[0][:10]}
    assert {_ms(e) for e in same} == {1_700_000_000_500}


def test_alternating_timestamps_keep_their_own_time() -> None:
    # Records of a batch come in any order; the cached time part must not stick.
    for _ in range(100):
        assert _ms(new_event_id(1.0)) == 1000
        assert _ms(new_event_id(2.5)) == 2500
        assert _ms(new_event_id(1.0005)) == 1000


@settings(max_examples=50)
@given(
    count=st.integers(min_value=0, max_value=200),
    timestamp=st.floats(min_value=0, max_value=(2**48 - 1) / 1000, allow_nan=False),
)
def test_batch_event_ids_are_distinct_valid_ulids_of_that_moment(
    count: int, timestamp: float
) -> None:
    batch = ids.new_event_ids(count, timestamp)
    assert len(batch) == count
    assert len(set(batch)) == count
    expected_ms = ULID.from_str(ids.new_event_id(timestamp)).milliseconds
    for event_id in batch:
        parsed = ULID.from_str(event_id)
        assert str(parsed) == event_id
        assert parsed.milliseconds == expected_ms
    # Within one run of 32 the ids ascend (the ULID spec's monotonic form).
    for start in range(0, count, 32):
        run = batch[start : start + 32]
        assert run == sorted(run)
