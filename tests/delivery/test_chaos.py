"""Chaos at the issue's scale: 20,000 spans through a server that misbehaves.

Nested sync and async traces go through ``tracerelay mock`` faulting 30 % of
requests across every kind (413, 429, 500, 503, slow, reset, lost reply), and
again through a 10-second outage in the middle of the run. Every span must
arrive at least once, every tree must be complete, and duplicates (from
replies lost after processing) must be counted. Bounded: each test stops by
itself within its deadlines.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import tracerelay
from tests.delivery.support import wait_for_delivery
from tracerelay.mock import Faults, MockServer

SPANS_PER_TRACE = 1 + 4 + 4 * 4  # root, 4 children, 4 grandchildren each
OPTIONS: dict[str, Any] = {
    "retry_backoff": 0.01,
    "max_retries": 50,
    "timeout": 2.0,
    "recovery_timeout": 0.5,
    "batch_flush_interval": 0.1,
    "failure_threshold": 20,
    "environ": {},
}


def sync_trace(t: int) -> None:
    with tracerelay.span(f"sync-{t}"):
        for c in range(4):
            with tracerelay.span(f"sync-{t}.{c}", attributes={"c": c}):
                for g in range(4):
                    with tracerelay.span(f"sync-{t}.{c}.{g}"):
                        pass


async def async_trace(t: int) -> None:
    async def child(c: int) -> None:
        async with tracerelay.span(f"async-{t}.{c}"):
            for g in range(4):
                async with tracerelay.span(f"async-{t}.{c}.{g}"):
                    await asyncio.sleep(0)

    async with tracerelay.span(f"async-{t}"):
        await asyncio.gather(*(child(c) for c in range(4)))


def produce(traces: int) -> list[str]:
    """Half the traces sync, half async; returns the root names."""
    half = traces // 2
    for t in range(half):
        sync_trace(t)

    async def all_async() -> None:
        for start in range(0, traces - half, 50):
            await asyncio.gather(
                *(async_trace(t) for t in range(start, min(start + 50, traces - half)))
            )

    asyncio.run(all_async())
    return [f"sync-{t}" for t in range(half)] + [f"async-{t}" for t in range(traces - half)]


def check_everything_arrived(server: MockServer, traces: int) -> None:
    payloads = [p for p in server.events.values() if "span_id" in p]
    assert len(payloads) == traces * SPANS_PER_TRACE
    by_id = {p["span_id"]: p for p in payloads}
    for p in payloads:
        parent = p["parent_span_id"]
        if parent is None:
            assert "." not in p["name"]
        else:
            assert by_id[parent]["name"] == p["name"].rsplit(".", 1)[0], p["name"]
    assert min(server.received.values()) >= 1


def test_twenty_thousand_spans_through_thirty_percent_faults(tmp_path: Path) -> None:
    faults = Faults(
        rate_413=0.03,
        rate_429=0.05,
        rate_500=0.05,
        rate_503=0.05,
        rate_slow=0.02,
        slow_seconds=0.2,
        rate_reset=0.05,
        rate_lost_reply=0.05,
        retry_after=0.05,
    )
    traces = 20_000 // SPANS_PER_TRACE + 1
    with MockServer(faults=faults, seed=11) as server:
        client = tracerelay.init(
            exporter="http", endpoint=server.url, spool_dir=str(tmp_path), **OPTIONS
        )
        produce(traces)
        wait_for_delivery(120, step_s=2)
        check_everything_arrived(server, traces)
        stats = server.stats()
        assert sum(stats["faults_injected"].values()) >= 0.2 * stats["requests_total"]
        metrics = client.metrics()
        assert metrics["items_dropped"] == 0
        redelivered = sum(n - 1 for n in server.received.values())
        assert 0 < metrics["duplicates"] <= redelivered  # lost replies made real duplicates
        tracerelay.shutdown()


def test_a_ten_second_outage_mid_run_loses_nothing(tmp_path: Path) -> None:
    traces = 20_000 // SPANS_PER_TRACE + 1
    server = MockServer(seed=5).start()
    port = server.port
    tracerelay.init(exporter="http", endpoint=server.url, spool_dir=str(tmp_path), **OPTIONS)

    def outage() -> None:
        time.sleep(0.5)
        server.stop()
        time.sleep(10)
        server.start()

    cut = threading.Thread(target=outage)
    cut.start()
    try:
        # Produce across the outage: part before it, the bulk during it.
        done = 0
        while done < traces:
            step = min(40, traces - done)
            for t in range(done, done + step):
                sync_trace(t)
            done += step
            time.sleep(0.05)
        cut.join(timeout=30)
        assert server.port == port
        wait_for_delivery(120, step_s=2)
        check_everything_arrived(server, traces)
        assert client_metrics()["items_dropped"] == 0
    finally:
        tracerelay.shutdown()
        cut.join(timeout=30)
        server.stop()


def client_metrics() -> dict[str, Any]:
    client = tracerelay.get_client()
    assert client is not None
    return client.metrics()
