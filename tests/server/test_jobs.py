"""``async_mode``: the batch is kept first, answered 202 with a job id, processed in the
background; ``GET /v1/jobs/{id}`` says when and how."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from tests.server.support import RunningServer, running_server
from tests.server.test_ingest import span_event
from tracerelay.server.storage.sqlite import SqliteStore


def wait_done(server: RunningServer, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    with server.client() as client:
        while True:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] == "done":
                return dict(job)
            assert time.monotonic() < deadline, job
            time.sleep(0.05)


def test_an_async_batch_is_answered_202_then_processed(tmp_path: Path) -> None:
    trace_id = "a1" * 16
    good = [span_event(trace_id, f"{i:016x}") for i in range(1, 4)]
    bad = span_event("nothex", "9" * 16)
    with running_server(tmp_path) as server:
        with server.client() as client:
            response = client.post(
                "/v1/telemetry/batch", json={"events": [*good, bad], "async_mode": True}
            )
        assert response.status_code == 202
        job_id = response.json()["job_id"]
        job = wait_done(server, job_id)
        result = job["result"]
        assert result["processed_events"] == 3 and result["failed_events"] == 1
        assert result["errors"][0]["details"].startswith("payload.trace_id")
        assert server.trace(trace_id)["span_count"] == 3
        with server.client() as client:
            assert client.get("/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV").status_code == 404


def test_a_job_kept_before_a_restart_is_processed_after_it(tmp_path: Path) -> None:
    trace_id = "b2" * 16
    with running_server(tmp_path):
        pass  # creates the database
    store = SqliteStore(str(tmp_path / "tracerelay.db"))
    try:
        body = orjson.dumps({"events": [span_event(trace_id, "1" * 16)], "async_mode": True})
        store.add_job("01ARZ3NDEKTSV4RRFFQ69G5FAV", "default", 1, body)
    finally:
        store.close()
    with running_server(tmp_path) as server:
        job = wait_done(server, "01ARZ3NDEKTSV4RRFFQ69G5FAV")
        assert job["result"]["processed_events"] == 1
        assert server.trace(trace_id)["span_count"] == 1
