"""The server on PostgreSQL: the same promises as on SQLite, and several replicas on one
database storing a batch once however many of them receive it."""

from __future__ import annotations

import threading
from pathlib import Path

import tracerelay
from tests.server.support import ADMIN_KEY, running_server
from tests.server.test_ingest import span_event


def test_sdk_traces_repeats_and_queries_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    with running_server(tmp_path, database_url=postgres_url) as server:
        spool = str(tmp_path / "spool")
        tracerelay.init(exporter="http", endpoint=server.url, api_key=ADMIN_KEY,
                        service="pg-shop", spool_dir=spool, environ={})  # fmt: skip
        with tracerelay.span("checkout", attributes={"plan": "pro"}) as root:
            for step in range(3):
                with (
                    tracerelay.span(f"step-{step}"),
                    tracerelay.span("llm", type="generation") as llm,
                ):
                    llm.record_usage(model="gpt-x", input_tokens=5, output_tokens=1)
            trace_id = root.trace_id
        assert tracerelay.flush(timeout=20)
        tracerelay.shutdown()
        trace = server.trace(trace_id)
        assert trace["span_count"] == 7 and trace["service"] == "pg-shop"
        assert [c["name"] for c in trace["tree"][0]["children"]] == ["step-0", "step-1", "step-2"]
        events = [span_event("d4" * 16, f"{i:016x}") for i in range(1, 11)]
        with server.client() as client:
            first = client.post("/v1/telemetry/batch", json={"events": events}).json()
            again = client.post("/v1/telemetry/batch", json={"events": events}).json()
            assert first["processed_events"] == 10 and again["duplicate_events"] == 10
            listed = client.get("/v1/traces", params={"attr.plan": "pro"}).json()["traces"]
            assert [t["trace_id"] for t in listed] == [trace_id]
            (usage,) = client.get("/v1/usage", params={"since": 0}).json()["models"]
            assert usage["total_tokens"] == 18
            red = client.get("/v1/metrics/red", params={"since": 0}).json()["operations"]
            assert {r["operation"] for r in red} >= {"checkout", "llm"}


def test_two_replicas_store_a_batch_sent_to_both_once(tmp_path: Path, postgres_url: str) -> None:
    trace_id = "e5" * 16
    events = [span_event(trace_id, f"{i:016x}", name=f"s{i}") for i in range(1, 201)]
    # A long span's three events, split across the replicas, merge into one row.
    with (
        running_server(tmp_path / "a", database_url=postgres_url) as a,
        running_server(tmp_path / "b", database_url=postgres_url) as b,
    ):
        answers: list[dict[str, int]] = []

        def send(server: object) -> None:
            with server.client() as client:  # type: ignore[attr-defined]
                answers.append(client.post("/v1/telemetry/batch", json={"events": events}).json())

        threads = [threading.Thread(target=send, args=(s,)) for s in (a, b, a, b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert a.trace(trace_id)["span_count"] == 200
        assert b.trace(trace_id)["span_count"] == 200
        assert sum(x["processed_events"] for x in answers) >= 200
        assert sum(x["processed_events"] + x["duplicate_events"] for x in answers) == 800
