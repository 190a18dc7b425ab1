"""Instant mode over loopback: alone, a span leaves as a stream upload; under load, together;
a long span is announced while it runs and completed when it ends.

A real ``MockServer`` on 127.0.0.1 says which endpoint brought each event
(``arrivals``, ``requests_by_path``), with which identity and which event type,
so these tests check what the server sees: single spans through
``/v1/uploads/stream`` with ``system_info`` mapped from the resource, bursts as
batches, announces and completions, and every event id through faults on
either endpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracerelay
from tests.delivery.support import spans_received
from tracerelay import _diagnostics
from tracerelay.mock import Faults, MockServer

BATCH = "/v1/telemetry/batch"
STREAM = "/v1/uploads/stream"
INSTANT = {
    "mode": "instant",
    "exporter": "http",
    "retry_backoff": 0.01,
    "max_retries": 30,
    "timeout": 2.0,
    "recovery_timeout": 0.5,
}
IDENTITY = {
    "TRACERELAY_RESOURCE_ATTRIBUTES": "service.namespace=shop,service.instance.id=pod-7",
}


@pytest.fixture
def server() -> Iterator[MockServer]:
    with MockServer(seed=5) as mock:
        yield mock


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def events_by_span(server: MockServer) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Span id → (event type, payload) of each distinct event about it, creates first."""
    types = server.event_types
    found: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for event_id, payload in server.events.items():
        if "span_id" in payload:
            found[payload["span_id"]].append((types[event_id], payload))
    return {span_id: sorted(items, key=lambda item: item[0]) for span_id, items in found.items()}


def shape(items: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, bool]]:
    """(event type, has an end) of each event about one span."""
    return [(kind, payload["end_time_unix_nano"] is not None) for kind, payload in items]


ONCE = [("observation_create", True)]
ANNOUNCED = [("observation_complete", True), ("observation_create", False)]


def one_at_a_time(server: MockServer, count: int) -> list[str]:
    """Spans made one by one, each only once the previous one has arrived."""
    names = []
    for i in range(count):
        with tracerelay.span(f"alone-{i}", attributes={"i": i}):
            pass
        names.append(f"alone-{i}")
        wait_until(lambda n=i: len(server.received) > n)
    return names


def test_spans_slower_than_a_round_trip_leave_one_by_one_through_the_stream(
    server: MockServer, tmp_path: Path
) -> None:
    client = tracerelay.init(
        endpoint=server.url,
        service="checkout",
        spool_dir=str(tmp_path),
        environ=IDENTITY,
        **INSTANT,
    )
    names = one_at_a_time(server, 12)
    assert tracerelay.flush(timeout=10)
    assert sorted(p["name"] for p in spans_received(server)) == sorted(names)
    arrivals = server.arrivals
    assert {how["path"] for how in arrivals.values()} == {STREAM}
    assert {str(how["system_info"]) for how in arrivals.values()} == {
        str({"system_name": "checkout", "system_id": "shop", "system_instance_id": "pod-7"})
    }
    stats = server.stats()
    assert stats["requests_by_path"] == {STREAM: 12}
    assert set(server.received.values()) == {1}
    metrics = client.metrics()
    assert metrics["items_created"] == metrics["items_processed"] == 12
    assert metrics["batches_processed"] == 12 and metrics["duplicates"] == 0


def test_instant_endpoint_batch_sends_a_lone_span_as_a_batch_of_one(
    server: MockServer, tmp_path: Path
) -> None:
    tracerelay.init(
        endpoint=server.url,
        spool_dir=str(tmp_path),
        instant_endpoint="batch",
        environ={},
        **INSTANT,
    )
    one_at_a_time(server, 3)
    assert tracerelay.flush(timeout=10)
    assert server.stats()["requests_by_path"] == {BATCH: 3}
    assert all(how["resource"]["service.name"] for how in server.arrivals.values())


def test_deferred_mode_never_uses_the_stream_endpoint(server: MockServer, tmp_path: Path) -> None:
    tracerelay.init(
        endpoint=server.url,
        spool_dir=str(tmp_path),
        exporter="http",
        batch_flush_interval=0.1,
        environ={},
    )
    for i in range(3):
        with tracerelay.span(f"s{i}"):
            pass
        time.sleep(0.15)
    assert tracerelay.flush(timeout=10)
    assert set(server.stats()["requests_by_path"]) == {BATCH}


def test_a_lone_event_too_large_for_the_stream_is_cut_down_and_sent_again(
    tmp_path: Path,
) -> None:
    with MockServer(max_body_bytes=6000, seed=1) as small:
        tracerelay.init(
            endpoint=small.url,
            spool_dir=str(tmp_path),
            compression="none",
            max_attribute_length=50_000,
            environ={},
            **INSTANT,
        )
        with tracerelay.span("huge", attributes={"blob": "x" * 20_000}):
            pass
        assert tracerelay.flush(timeout=10)
        (huge,) = spans_received(small)
        assert huge["attributes"]["tracerelay.truncated"] is True
        assert len(huge["attributes"]["blob"]) < 2000
        assert small.stats()["requests_by_status"] == {"200": 1, "413": 1}
        assert small.stats()["requests_by_path"] == {STREAM: 2}


def test_a_refused_stream_upload_is_reported_once_and_kept_then_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_diagnostics, "_warned", set())  # "once" is per process
    with MockServer(api_key="right", seed=1) as server:
        tracerelay.init(
            endpoint=server.url, api_key="wrong", spool_dir=str(tmp_path), environ={}, **INSTANT
        )
        with caplog.at_level(logging.WARNING, logger="tracerelay"):
            with tracerelay.span("refused"):
                pass
            assert tracerelay.flush(timeout=1) is False
        messages = [r.getMessage() for r in caplog.records if "TR-AUTH-REJECTED" in r.getMessage()]
        assert len(messages) == 1
        assert server.received == {} and server.stats()["requests_by_path"][STREAM] >= 1
        assert list(tmp_path.glob("*.batch"))
        tracerelay.shutdown(timeout=0.2)
        # Started again with the right key, the process replays what was kept.
        tracerelay.init(
            endpoint=server.url, api_key="right", spool_dir=str(tmp_path), environ={}, **INSTANT
        )
        assert tracerelay.flush(timeout=10)
        assert [p["name"] for p in spans_received(server)] == ["refused"]


def test_under_load_whatever_is_queued_leaves_together(server: MockServer, tmp_path: Path) -> None:
    client = tracerelay.init(endpoint=server.url, spool_dir=str(tmp_path), environ={}, **INSTANT)
    spans = 5000
    for i in range(spans):
        with tracerelay.span(f"burst-{i}"):
            pass
    assert tracerelay.flush(timeout=30)
    names = {p["name"] for p in spans_received(server)}
    assert names == {f"burst-{i}" for i in range(spans)}
    stats = server.stats()
    assert stats["requests_total"] < spans / 10, stats["requests_by_path"]
    assert stats["event_deliveries_by_path"].get(BATCH, 0) > spans / 2
    metrics = client.metrics()
    assert metrics["items_created"] == metrics["items_processed"] == spans


def test_thirty_percent_faults_on_the_stream_lose_no_event(tmp_path: Path) -> None:
    faults = Faults(
        rate_429=0.06,
        rate_500=0.06,
        rate_503=0.06,
        rate_reset=0.06,
        rate_lost_reply=0.06,
        retry_after=0.02,
    )
    with MockServer(faults=faults, seed=11) as server:
        client = tracerelay.init(
            endpoint=server.url,
            spool_dir=str(tmp_path),
            failure_threshold=50,
            environ={},
            **INSTANT,
        )
        made = []
        for i in range(150):
            with tracerelay.span(f"faulted-{i}"):
                pass
            made.append(f"faulted-{i}")
            if i % 30 == 0:  # now and then a burst, which leaves as a batch
                for j in range(20):
                    with tracerelay.span(f"burst-{i}.{j}"):
                        pass
                    made.append(f"burst-{i}.{j}")
            time.sleep(0.005)
        assert tracerelay.flush(timeout=60)
        assert sorted(p["name"] for p in spans_received(server)) == sorted(made)
        stats = server.stats()
        # Most lone spans left as stream uploads (how many depends on the machine's load).
        assert stats["requests_by_path"][STREAM] > 20
        assert sum(stats["faults_injected"].values()) >= 0.2 * stats["requests_total"]
        # Lost replies make the SDK send again: the server sees (and reports) duplicates.
        redelivered = sum(n - 1 for n in server.received.values())
        assert redelivered >= client.metrics()["duplicates"] > 0
        metrics = client.metrics()
        assert metrics["items_processed"] == metrics["items_created"] == len(made)


# -- long spans: announced at start, completed at end ----------------------------------


def test_a_long_span_is_announced_while_it_runs_and_completed_when_it_ends(
    server: MockServer, tmp_path: Path
) -> None:
    client = tracerelay.init(
        endpoint=server.url, spool_dir=str(tmp_path), announce_after=0.2, environ={}, **INSTANT
    )
    with tracerelay.span("long", attributes={"k": 1}) as long:
        started = time.monotonic()
        wait_until(lambda: len(server.received) == 1, timeout=5)
        waited = time.monotonic() - started
        long.set_attribute("rows", 10)
        long.set_status("ok")
    with tracerelay.span("short"):
        pass
    assert tracerelay.flush(timeout=10)
    assert 0.2 <= waited < 2.0
    spans = events_by_span(server)
    assert shape(spans[long.span_id]) == ANNOUNCED
    (_, done), (_, announce) = spans[long.span_id]
    assert announce["status"] == {"code": "unset", "message": ""}
    assert announce["attributes"] == {"k": 1}
    assert announce["trace_id"] == done["trace_id"] == long.trace_id
    assert done["status"]["code"] == "ok" and done["attributes"] == {"k": 1, "rows": 10}
    assert announce["start_time_unix_nano"] == done["start_time_unix_nano"]
    (short,) = (items for span_id, items in spans.items() if span_id != long.span_id)
    assert shape(short) == ONCE
    assert len(server.received) == 3 and set(server.received.values()) == {1}
    metrics = client.metrics()
    assert metrics["items_created"] == metrics["items_processed"] == 3


def test_announce_after_zero_announces_a_span_as_soon_as_the_pipeline_sees_it(
    server: MockServer, tmp_path: Path
) -> None:
    tracerelay.init(
        endpoint=server.url, spool_dir=str(tmp_path), announce_after=0, environ={}, **INSTANT
    )
    with tracerelay.span("first-of-all") as span:
        wait_until(lambda: len(server.received) == 1, timeout=1.0)
    assert tracerelay.flush(timeout=10)
    assert shape(events_by_span(server)[span.span_id]) == ANNOUNCED


def test_deferred_mode_never_announces(server: MockServer, tmp_path: Path) -> None:
    tracerelay.init(
        endpoint=server.url,
        spool_dir=str(tmp_path),
        exporter="http",
        announce_after=0,
        batch_flush_interval=0.1,
        environ={},
    )
    with tracerelay.span("long") as span:
        time.sleep(0.5)
    assert tracerelay.flush(timeout=10)
    assert list(events_by_span(server)) == [span.span_id]
    assert shape(events_by_span(server)[span.span_id]) == ONCE


def test_redaction_applies_to_the_announce(server: MockServer, tmp_path: Path) -> None:
    tracerelay.init(
        endpoint=server.url, spool_dir=str(tmp_path), announce_after=0.1, environ={}, **INSTANT
    )
    with tracerelay.span("login", attributes={"password": "hunter2", "user": "ann"}) as span:
        span.set_attribute("note", "Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345")
        wait_until(lambda: len(server.received) == 1, timeout=5)
        (announce,) = server.events.values()
        # The announce was redacted, the running span was not touched.
        assert span.attributes["password"] == "hunter2"
        span.set_attribute("api_key", "sk-live-0123456789abcdef0123")
    assert tracerelay.flush(timeout=10)
    assert announce["attributes"]["password"] == "[REDACTED]"
    assert "abcdefghijklmnopqrstuvwxyz012345" not in announce["attributes"]["note"]
    assert announce["attributes"]["user"] == "ann"
    (_, done), _ = events_by_span(server)[span.span_id]
    assert done["attributes"]["password"] == done["attributes"]["api_key"] == "[REDACTED]"


def test_announces_and_completions_survive_faults_each_on_its_own(tmp_path: Path) -> None:
    faults = Faults(
        rate_429=0.06,
        rate_500=0.06,
        rate_503=0.06,
        rate_reset=0.06,
        rate_lost_reply=0.06,
        retry_after=0.02,
    )
    with MockServer(faults=faults, seed=4) as server:
        tracerelay.init(
            endpoint=server.url,
            spool_dir=str(tmp_path),
            announce_after=0.05,
            failure_threshold=50,
            environ={},
            **INSTANT,
        )
        ids: list[str] = []
        lock = threading.Lock()

        def work(i: int) -> None:
            with tracerelay.span(f"long-{i}") as span:
                time.sleep(0.3 + (i % 5) * 0.05)
                with tracerelay.span(f"inner-{i}"):
                    pass
            with lock:
                ids.append(span.span_id)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert tracerelay.flush(timeout=60)
        spans = events_by_span(server)
        assert all(shape(spans[span_id]) == ANNOUNCED for span_id in ids)
        assert len(spans) == 80  # the inner spans too, each in one shape or the other
        assert sum(server.stats()["faults_injected"].values()) > 0


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(durations=st.lists(st.floats(min_value=0.0, max_value=0.8), min_size=1, max_size=12))
def test_every_span_arrives_as_the_rule_says(tmp_path: Path, durations: list[float]) -> None:
    after = 0.25
    with MockServer(seed=2) as server:
        tracerelay.init(
            endpoint=server.url,
            spool_dir=str(tmp_path),
            announce_after=after,
            environ={},
            **INSTANT,
        )
        made: dict[str, float] = {}
        lock = threading.Lock()

        def run(duration: float) -> None:
            with tracerelay.span("timed") as span:
                time.sleep(duration)
            with lock:
                made[span.span_id] = duration

        threads = [threading.Thread(target=run, args=(d,)) for d in durations]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert tracerelay.flush(timeout=20)
        tracerelay.shutdown()
        spans = events_by_span(server)
        assert set(spans) == set(made)
        assert set(server.received.values()) == {1}
        for span_id, duration in made.items():
            got = shape(spans[span_id])
            # Ended well before it was due: once. Open well after it was due (the
            # pipeline looks every 1/4 of announce_after): announced. In between, the
            # pipeline's timing decides, but always one shape or the other.
            if duration < after * 0.4:
                assert got == ONCE, duration
            elif duration > after * 2.4:
                assert got == ANNOUNCED, duration
            else:
                assert got in (ONCE, ANNOUNCED), duration
