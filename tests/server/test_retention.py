"""``--retention-days``: whole traces older than the limit go, newer ones stay."""

from __future__ import annotations

import time
from pathlib import Path

from tests.server.support import running_server
from tracerelay.ids import new_event_id


def event(trace: int, age_days: float, *, event_type: str = "observation_create") -> dict:
    start = int((time.time() - age_days * 86400) * 1e9)
    payload = {
        "trace_id": f"{trace:032x}", "span_id": f"{trace:016x}", "parent_span_id": None,
        "name": "old" if age_days > 1 else "new",
        "start_time_unix_nano": start, "end_time_unix_nano": start + 1000,
    }  # fmt: skip
    return {"event_id": new_event_id(), "event_type": event_type, "timestamp": time.time(),
            "payload": payload}  # fmt: skip


def test_old_traces_and_records_are_deleted_new_ones_kept(tmp_path: Path) -> None:
    with running_server(tmp_path, retention_days=2, retention_check_seconds=0.2) as server:
        old_score = {
            "event_id": new_event_id(), "event_type": "quality_score_create",
            "timestamp": time.time(),
            "payload": {"name": "accuracy", "value": 0.5, "trace_id": f"{1:032x}",
                        "time_unix_nano": int((time.time() - 5 * 86400) * 1e9)},
        }  # fmt: skip
        with server.client() as client:
            body = {"events": [event(1, 5), event(2, 3), event(3, 0.5), old_score]}
            assert client.post("/v1/telemetry/batch", json=body).status_code == 200
            deadline = time.monotonic() + 15
            while client.get(f"/v1/traces/{2:032x}").status_code != 404:
                assert time.monotonic() < deadline, "retention never ran"
                time.sleep(0.1)
            assert client.get(f"/v1/traces/{1:032x}").status_code == 404
            kept = client.get(f"/v1/traces/{3:032x}")
            assert kept.status_code == 200 and kept.json()["span_count"] == 1
            listed = client.get("/v1/traces").json()["traces"]
            assert [t["trace_id"] for t in listed] == [f"{3:032x}"]
