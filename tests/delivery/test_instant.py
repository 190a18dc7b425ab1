"""Instant mode over loopback: alone, a span leaves as a stream upload; under load, together.

A real ``MockServer`` on 127.0.0.1 says which endpoint brought each event
(``arrivals``, ``requests_by_path``) and with which identity, so these tests
check what the server sees: single spans through ``/v1/uploads/stream`` with
``system_info`` mapped from the resource, bursts as batches, and every event id
through faults on either endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tracerelay
from tests.delivery.support import spans_received
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
            time.sleep(0.003)
        assert tracerelay.flush(timeout=60)
        assert sorted(p["name"] for p in spans_received(server)) == sorted(made)
        stats = server.stats()
        assert stats["requests_by_path"][STREAM] > 50
        assert sum(stats["faults_injected"].values()) >= 0.2 * stats["requests_total"]
        # Lost replies make the SDK send again: the server sees (and reports) duplicates.
        redelivered = sum(n - 1 for n in server.received.values())
        assert redelivered >= client.metrics()["duplicates"] > 0
        metrics = client.metrics()
        assert metrics["items_processed"] == metrics["items_created"] == len(made)
