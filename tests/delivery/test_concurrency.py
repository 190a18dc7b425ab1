"""Several requests in flight, over loopback to a real ``MockServer``.

What a user notices: against a slow server the SDK keeps several requests out
at once (the server sees them together) and delivers sooner; against a fast
one it keeps one request and one sender thread; a Retry-After pauses every
request, not one; faults lose nothing and count nothing twice; and a shutdown
while several requests hang keeps every one of their events in the spool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tracerelay
from tests.delivery.support import FAST, FAULTY, THROUGH_FAULTS, spans_received, wait_for_delivery
from tracerelay.delivery import sender as sender_module
from tracerelay.mock import Faults, MockServer

# Small batches, so a few hundred spans make enough full batches to fill several requests.
SMALL_BATCHES: dict[str, Any] = {
    "batch_max_size": 10,
    "min_batch_size": 5,
    "max_batch_size": 20,
    **FAST,
}


def make_spans(n: int, prefix: str = "s") -> list[str]:
    names = [f"{prefix}{i}" for i in range(n)]
    for name in names:
        with tracerelay.span(name):
            pass
    return names


def sender_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("tracerelay-sender")}


def wait_until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def thread_names() -> Iterator[set[str]]:
    """Every sender thread name seen while the test runs (sampled every 5 ms)."""
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.005):
            seen.update(sender_threads())

    watcher = threading.Thread(target=watch, name="test-thread-watcher", daemon=True)
    watcher.start()
    yield seen
    done.set()
    watcher.join()


def test_slow_replies_put_several_requests_in_flight_then_the_extra_threads_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, thread_names: set[str]
) -> None:
    monkeypatch.setattr(sender_module, "_EXTRA_IDLE_S", 0.3)
    with MockServer(faults=Faults(latency=0.3), seed=1) as server:
        client = tracerelay.init(
            exporter="http", endpoint=server.url, spool_dir=str(tmp_path), **SMALL_BATCHES
        )
        made = make_spans(400)
        assert tracerelay.flush(timeout=30)
        assert sorted(p["name"] for p in spans_received(server)) == sorted(made)
        # One request at a time would need 30+ round trips of 0.3 s; the server saw
        # several requests at once, and never more than the connection pool allows.
        assert 3 <= server.stats()["concurrent_requests_max"] <= 10
        metrics = client.metrics()
        assert metrics["in_flight_limit"] >= 3 and metrics["items_processed"] == len(made)
        assert "tracerelay-sender-2" in thread_names
        # Idle again: the extra sender threads end, the first one stays.
        assert wait_until(lambda: sender_threads() == {"tracerelay-sender"}, timeout=5)
        assert client.metrics()["requests_in_flight"] == 0


def test_a_fast_server_gets_one_request_at_a_time_from_one_thread(
    tmp_path: Path, thread_names: set[str]
) -> None:
    with MockServer(seed=1) as server:
        client = tracerelay.init(
            exporter="http", endpoint=server.url, spool_dir=str(tmp_path), **FAST
        )
        made = make_spans(10_000)
        assert tracerelay.flush(timeout=60)
        assert len(spans_received(server)) == len(made)
        assert server.stats()["requests_total"] > 10  # a backlog, in many batches
        assert server.stats()["concurrent_requests_max"] == 1
        assert client.metrics()["in_flight_limit"] == 1
        assert thread_names == {"tracerelay-sender"}


def test_a_retry_after_from_one_429_holds_every_request(tmp_path: Path) -> None:
    with MockServer(faults=Faults(latency=0.2), seed=1) as server:
        client = tracerelay.init(
            exporter="http", endpoint=server.url, spool_dir=str(tmp_path), **SMALL_BATCHES
        )
        made = make_spans(600)
        assert wait_until(lambda: client.metrics()["requests_in_flight"] >= 3, timeout=10)
        # The next request to arrive gets a 429 (answered 0.2 s later); the ones after
        # it, in flight at the same time, do not.
        server.set_faults(Faults(latency=0.2, rate_429=1.0, retry_after=0.6))
        assert wait_until(lambda: server.stats()["faults_injected"]["429"] > 0, timeout=10)
        server.set_faults(Faults(latency=0.2))
        assert tracerelay.flush(timeout=30)
        assert sorted(p["name"] for p in spans_received(server)) == sorted(made)
    log = server.requests
    first_429 = min(r["answered"] for r in log if r["outcome"] == "429")
    # Requests already on their way when the 429 was answered may land just after it;
    # after that, from no thread, nothing until the Retry-After has passed.
    during = [r for r in log if first_429 + 0.1 < r["arrived"] < first_429 + 0.58]
    assert during == []
    assert any(r["arrived"] >= first_429 + 0.58 for r in log)  # and then they resumed


def test_thirty_percent_faults_with_several_requests_in_flight_lose_and_double_count_nothing(
    tmp_path: Path,
) -> None:
    faults = Faults(**{**FAULTY.as_dict(), "latency": 0.1})
    with MockServer(faults=faults, seed=5) as server:
        client = tracerelay.init(
            exporter="http", endpoint=server.url, spool_dir=str(tmp_path), **THROUGH_FAULTS
        )
        made = make_spans(600)
        assert tracerelay.flush(timeout=60)
        stats = server.stats()
        assert stats["concurrent_requests_max"] >= 2
        assert sum(stats["faults_injected"].values()) >= 0.2 * stats["requests_total"]
        assert sorted(p["name"] for p in spans_received(server)) == sorted(made)
        metrics = client.metrics()
        # Each event counted once as delivered, however many times it was sent.
        assert metrics["items_processed"] == len(made)
        assert metrics["items_spooled"] == metrics["items_dropped"] == 0
        redelivered = sum(n - 1 for n in server.received.values())
        assert redelivered >= metrics["duplicates"] >= 0


def test_shutdown_while_several_requests_hang_keeps_all_their_events(tmp_path: Path) -> None:
    with MockServer(faults=Faults(latency=0.2), seed=1) as server:
        client = tracerelay.init(
            exporter="http",
            endpoint=server.url,
            spool_dir=str(tmp_path),
            shutdown_timeout=0.5,
            **{**SMALL_BATCHES, "timeout": 60.0},
        )
        make_spans(200, "warm")
        assert tracerelay.flush(timeout=30)
        assert client.metrics()["in_flight_limit"] >= 3
        # Now every request hangs: several go out and none comes back.
        server.set_faults(Faults(latency=60))
        made = make_spans(200, "hung")
        assert wait_until(lambda: client.metrics()["requests_in_flight"] >= 3, timeout=10)
        started = time.monotonic()
        tracerelay.shutdown()
        assert time.monotonic() - started < 3
        metrics = client.metrics()
        assert metrics["items_dropped"] == 0 and metrics["items_spooled"] >= len(made)
        # The server is well again; the next run replays the spool: nothing was lost.
        server.set_faults(Faults())
        tracerelay.init(exporter="http", endpoint=server.url, spool_dir=str(tmp_path), **FAST)
        wait_for_delivery(30)
        received = {p["name"] for p in spans_received(server)}
        assert set(made) <= received


def test_a_retry_after_longer_than_the_exit_deadline_does_not_hold_the_exit(
    tmp_path: Path,
) -> None:
    # Every answer is a 503 asking for 30 s: the senders pause with a backlog queued.
    with MockServer(faults=Faults(rate_503=1.0, retry_after=30), seed=1) as server:
        client = tracerelay.init(
            exporter="http",
            endpoint=server.url,
            spool_dir=str(tmp_path),
            shutdown_timeout=0.5,
            **{**SMALL_BATCHES, "failure_threshold": 1000},
        )
        made = make_spans(2000)
        assert wait_until(lambda: server.stats()["requests_total"] > 0, timeout=10)
        started = time.monotonic()
        tracerelay.shutdown()
        # The 0.5 s deadline and the exporter's brief grace; not the pause, and not the
        # second of grace given to requests that could still finish.
        assert time.monotonic() - started < 1.5
        metrics = client.metrics()
        assert metrics["items_dropped"] == 0 and metrics["items_spooled"] >= len(made)
