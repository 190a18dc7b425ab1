"""The two ways a batch is read agree: msgspec's schema (the fast path) and the
field-by-field checks (which explain refusals) accept the same events and make
the same rows, whatever a payload holds."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracerelay.server.ingest.events import (
    EnvelopeError,
    decode_observation,
    parse_events,
    read_batch,
)
from tracerelay.server.storage.rows import span_row

HEX32 = "0123456789abcdef" * 2


def ids(size: int) -> tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]:
    """(good ids, ids of every wrong kind)."""
    good = st.text("0123456789abcdef", min_size=size, max_size=size).filter(
        lambda s: s != "0" * size
    )
    bad = st.one_of(
        st.just("0" * size),
        good.map(str.upper),
        good.map(lambda s: s[:-1]),
        good.map(lambda s: s + "\n"),
        st.integers(0, 9),
    )
    return good, bad


TRACE_IDS, SPAN_IDS = ids(32), ids(16)
NS = (st.integers(0, 20), st.sampled_from([-1, 2**63 - 1, 2**63, 2**64 - 1, True, 1.5, "5"]))
# Per field: (values the schema takes, values it refuses or that test its edges).
FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "trace_id": TRACE_IDS,
    "span_id": SPAN_IDS,
    "parent_span_id": (st.one_of(st.none(), SPAN_IDS[0]), SPAN_IDS[1]),
    "name": (st.sampled_from(["step", None]), st.sampled_from(["", 5])),
    "kind": (st.sampled_from(["internal", "client", None]), st.sampled_from(["bogus", 1])),
    "type": (st.sampled_from(["span", "generation", None]), st.just(3)),
    "start_time_unix_nano": NS,
    "end_time_unix_nano": (st.integers(0, 20), NS[1]),
    "status": (
        st.sampled_from(
            [
                {"code": "ok", "message": ""},
                {"code": "error", "message": "boom"},
                {"code": "unset"},
                None,
            ]
        ),
        st.sampled_from(
            [
                {"message": "no code"},
                {"code": "bad"},
                {"code": "ok", "message": None},
                {"code": "error", "message": 3},
                "ok",
            ]
        ),
    ),
    "attributes": (
        st.sampled_from([{}, {"a": 1, "b": [1, "x"]}, None]),
        st.sampled_from([[1], "x"]),
    ),
    "events": (
        st.sampled_from([[], [{"name": "e", "time_unix_nano": 1}], [1, "x"], None]),
        st.sampled_from([{}, "x"]),
    ),
    "links": (
        st.sampled_from([[{"trace_id": HEX32, "span_id": HEX32[:16]}], None]),
        st.just("x"),
    ),
    "model": (st.sampled_from(["gpt", "", None]), st.just(1)),
    "usage": (
        st.sampled_from([{"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}, {}, None]),
        st.sampled_from(
            [
                {"input_tokens": -1},
                {"input_tokens": 2**63},
                {"input_tokens": True},
                {"input_tokens": 1.0},
                [],
            ]
        ),
    ),
    "cost_usd": (st.sampled_from([0.5, 1, None, 2**64 - 1]), st.sampled_from([True, "1"])),
    "sequence": NS,
    "input": (st.sampled_from([{"q": "hi"}, "text", 1, None]), st.nothing()),
    "output": (st.sampled_from([["a"], None]), st.nothing()),
    "trace_state": (st.sampled_from(["a=b", "", 5, None]), st.nothing()),
    "scope": (st.sampled_from([{"name": "s"}, None]), st.nothing()),
    "extra": (st.just(1), st.nothing()),
}


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A payload of good values (some fields absent), with none, one or two made bad."""
    payload = {}
    for name, (good, _bad) in FIELDS.items():
        if name in ("trace_id", "span_id") or draw(st.booleans()):
            payload[name] = draw(good)
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=2)):
        bad = FIELDS[name][1]
        if not bad.is_empty:
            payload[name] = draw(bad)
    return payload


event_types = st.sampled_from(["observation_create", "observation_update", "observation_complete"])


@settings(max_examples=400, deadline=None)
@given(payload=payloads(), event_type=event_types)
def test_the_schema_and_the_checks_accept_the_same_payloads_and_make_the_same_rows(
    payload: dict[str, Any], event_type: str
) -> None:
    event = {
        "event_id": "01KBX3Z8Q4M6W7Y9A0B1C2D3E4",
        "event_type": event_type,
        "timestamp": 1767225600.5,
        "payload": payload,
    }
    body = orjson.dumps({"events": [event], "resource": {"service.name": "svc"}})
    checked = parse_events([event], "p", {"service.name": "svc"})
    read = read_batch(body, "p")
    assert read.parsed is not None
    fast_accepts = decode_observation(orjson.dumps(payload), event_type) is not None
    assert fast_accepts == (not checked.errors)
    assert read.parsed.event_ids == checked.event_ids
    assert [w.row for w in read.parsed.batch.spans] == [w.row for w in checked.batch.spans]
    assert [e["index"] for e in read.parsed.errors] == [e["index"] for e in checked.errors]
    for write in read.parsed.batch.spans:
        # The row built in one step is the row of the event's state, as a merge builds it.
        assert write.row == span_row("p", write.trace_id, write.span_id, write.state())


def test_a_refused_field_is_named_with_its_path() -> None:
    event = {
        "event_id": "01KBX3Z8Q4M6W7Y9A0B1C2D3E4",
        "event_type": "observation_create",
        "timestamp": 1.0,
        "payload": {"trace_id": HEX32, "span_id": "00" * 8, "name": "x",
                    "start_time_unix_nano": 1},
    }  # fmt: skip
    good = {**event, "event_id": "01KBX3Z8Q4M6W7Y9A0B1C2D3E5",
            "payload": {**event["payload"], "span_id": HEX32[:16]}}  # fmt: skip
    read = read_batch(orjson.dumps({"events": [event, good]}), "p")
    assert read.parsed is not None
    assert read.parsed.event_ids == ["01KBX3Z8Q4M6W7Y9A0B1C2D3E5"]
    (error,) = read.parsed.errors
    assert error["index"] == 0
    assert error["details"].startswith("payload.span_id: expected 16 lowercase hex")


@pytest.mark.parametrize(
    "body",
    [
        {"events": "nope"},
        {"events": [{"event_id": "x"}], "async_mode": False, "resource": 3},
        [],
    ],
)
def test_bodies_the_envelope_refuses_are_read_the_slow_way(body: Any) -> None:
    raw = orjson.dumps(body)
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        with pytest.raises(EnvelopeError):
            read_batch(raw, "p")
        return
    read = read_batch(raw, "p")
    assert read.parsed is not None
    assert read.parsed.errors[0]["details"].startswith("event_id: expected a ULID")


def test_async_batches_are_counted_and_kept_for_the_worker() -> None:
    event = {"event_id": "01KBX3Z8Q4M6W7Y9A0B1C2D3E4", "event_type": "observation_create",
             "timestamp": 1.0, "payload": {"trace_id": HEX32, "span_id": HEX32[:16],
                                           "name": "x", "start_time_unix_nano": 1}}  # fmt: skip
    raw = orjson.dumps({"events": [event, event], "async_mode": True})
    deferred = read_batch(raw, "p")
    assert (deferred.parsed, deferred.events) == (None, 2)
    worker = read_batch(raw, "p", defer_async=False)
    assert worker.parsed is not None and len(worker.parsed.batch.spans) == 2
