"""SDK → ``tracerelay mock`` faults → the server, deferred and instant: every trace
complete, every span stored once, the repeats the faults caused recognised."""

from __future__ import annotations

from pathlib import Path

import pytest

import tracerelay
from tests.delivery.support import FAULTY, THROUGH_FAULTS, wait_for_delivery
from tests.server.support import ADMIN_KEY, running_server
from tracerelay.mock import MockServer


@pytest.mark.parametrize("mode", ["deferred", "instant"])
def test_traces_through_faults_are_stored_whole_and_once(tmp_path: Path, mode: str) -> None:
    with (
        running_server(tmp_path / "server") as server,
        MockServer(faults=FAULTY, seed=9, upstream=server.url) as proxy,
    ):
        client = tracerelay.init(
            exporter="http", endpoint=proxy.url, api_key=ADMIN_KEY, service="shop", mode=mode,
            spool_dir=str(tmp_path / "spool"), **THROUGH_FAULTS,
        )  # fmt: skip
        roots = []
        for t in range(30):
            with tracerelay.span(f"order-{t}") as root:
                roots.append(root.trace_id)
                for step in range(3):
                    with tracerelay.span(f"step-{step}"), tracerelay.span("db"):
                        pass
        wait_for_delivery(60, step_s=2)
        assert client.metrics()["items_dropped"] == 0
        stats = proxy.stats()
        assert sum(stats["faults_injected"].values()) > 0
        tracerelay.shutdown()
        for trace_id in roots:
            trace = server.trace(trace_id)
            assert trace["span_count"] == 7 and trace["orphans"] == []
            assert [c["name"] for c in trace["tree"][0]["children"]] == [
                "step-0",
                "step-1",
                "step-2",
            ]
        # Lost replies made the SDK send events the server already had: recognised, and
        # the rows are one per span whatever arrived twice.
        with server.client() as http:
            listed = http.get("/v1/traces", params={"limit": 100}).json()["traces"]
            metrics = http.get("/metrics").text
        assert len(listed) == 30 and sum(t["span_count"] for t in listed) == 210
        if stats["faults_injected"].get("lost_reply"):
            assert "tracerelay_duplicate_events_total 0.0" not in metrics
