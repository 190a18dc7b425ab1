"""The server's ingest, end to end over HTTP: the SDK's batches and streamed events stored
once, in any order, and bad input answered 4xx with a code — never 5xx, never a crash."""

from __future__ import annotations

import gzip
import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

import tracerelay
from tests.server.support import ADMIN_KEY, RunningServer, running_server
from tracerelay.errors import ConfigError
from tracerelay.ids import new_event_id
from tracerelay.server.keys import make_key
from tracerelay.server.settings import ServerSettings
from tracerelay.server.storage.sqlite import SqliteStore


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path) as running:
        yield running


def span_event(
    trace_id: str,
    span_id: str,
    *,
    parent: str | None = None,
    name: str = "s",
    event_type: str = "observation_create",
    timestamp: float | None = None,
    **payload: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "start_time_unix_nano": 1_700_000_000_000_000_000,
        "end_time_unix_nano": 1_700_000_000_500_000_000,
        **payload,
    }
    return {
        "event_id": new_event_id(),
        "event_type": event_type,
        "timestamp": time.time() if timestamp is None else timestamp,
        "payload": body,
    }


def post(server: RunningServer, events: list[dict[str, Any]], **envelope: Any) -> Any:
    with server.client() as client:
        return client.post("/v1/telemetry/batch", json={"events": events, **envelope})


def test_sdk_traces_are_stored_whole_and_queryable(server: RunningServer, tmp_path: Path) -> None:
    tracerelay.init(
        exporter="http",
        endpoint=server.url,
        api_key=ADMIN_KEY,
        service="checkout",
        spool_dir=str(tmp_path / "spool"),
        environ={},
    )
    trace_ids = []
    for t in range(5):
        with tracerelay.span(f"request-{t}", attributes={"t": t}) as root:
            trace_ids.append(root.trace_id)
            for c in range(3):
                with tracerelay.span(f"step-{c}"):
                    with tracerelay.span("llm", type="generation") as g:
                        g.record_usage(model="gpt-x", input_tokens=10, output_tokens=5)
            if t == 0:
                try:
                    with tracerelay.span("fails"):
                        raise ValueError("boom")
                except ValueError:
                    pass
    assert tracerelay.flush(timeout=20)
    tracerelay.shutdown()
    first = server.trace(trace_ids[0])
    assert first["name"] == "request-0" and first["service"] == "checkout"
    assert first["span_count"] == 8 and first["error_count"] == 1
    assert first["orphans"] == []
    (root,) = first["tree"]
    assert [c["name"] for c in root["children"]] == ["step-0", "step-1", "step-2", "fails"]
    assert all(c["children"][0]["name"] == "llm" for c in root["children"][:3])
    llm = next(s for s in first["spans"] if s["name"] == "llm")
    assert llm["type"] == "generation" and llm["model"] == "gpt-x"
    assert llm["usage"] == {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    failed = next(s for s in first["spans"] if s["name"] == "fails")
    assert failed["status"]["code"] == "error"
    assert failed["events"][0]["attributes"]["exception.type"] == "ValueError"
    for trace_id in trace_ids[1:]:
        assert server.trace(trace_id)["span_count"] == 7


def test_a_batch_sent_twice_is_stored_once_and_the_repeat_counted(server: RunningServer) -> None:
    trace_id = "ab" * 16
    events = [span_event(trace_id, f"{i:016x}", name=f"s{i}") for i in range(1, 21)]
    first = post(server, events)
    assert first.status_code == 200
    assert first.json()["processed_events"] == 20 and first.json()["duplicate_events"] == 0
    again = post(server, events)
    assert again.status_code == 200
    assert again.json()["duplicate_events"] == 20 and again.json()["processed_events"] == 0
    assert server.trace(trace_id)["span_count"] == 20
    strict = post(server, events[:1], deduplication={"fail_on_duplicate": True})
    assert strict.status_code == 409


def test_repeats_are_found_by_the_store_after_a_restart(tmp_path: Path) -> None:
    # The in-process dedup is empty after a restart: the store itself must see the repeat.
    trace_id = "cd" * 16
    events = [span_event(trace_id, f"{i:016x}") for i in range(1, 6)]
    with running_server(tmp_path) as server:
        assert post(server, events).json()["processed_events"] == 5
    with running_server(tmp_path) as server:
        answer = post(server, events).json()
        assert answer["duplicate_events"] == 5
        assert server.trace(trace_id)["span_count"] == 5


def test_a_long_span_told_in_three_events_converges_in_any_order(server: RunningServer) -> None:
    trace_id = "ef" * 16
    start = span_event(trace_id, "1" * 16, name="agent", timestamp=100.0, attributes={"step": 1})
    del start["payload"]["end_time_unix_nano"]
    update = span_event(
        trace_id, "1" * 16, name="agent", event_type="observation_update", timestamp=101.0,
        attributes={"step": 2, "tool": "search"},
    )  # fmt: skip
    del update["payload"]["end_time_unix_nano"]
    complete = span_event(
        trace_id, "1" * 16, name="agent", event_type="observation_complete", timestamp=102.0,
        attributes={"step": 3}, status={"code": "ok", "message": ""},
    )  # fmt: skip
    for order in ([complete, update, start], [update, start, complete, start]):
        for event in order:
            assert post(server, [event]).status_code == 200
        (span,) = server.trace(trace_id)["spans"]
        assert span["attributes"] == {"step": 3, "tool": "search"}
        assert span["end_time_unix_nano"] == 1_700_000_000_500_000_000
        assert span["status"]["code"] == "ok"


def test_a_streamed_event_is_stored_then_reported_as_duplicate(server: RunningServer) -> None:
    trace_id = "12" * 16
    event = span_event(trace_id, "2" * 16, name="tool-call")
    body = {"event": event, "system_info": {"system_name": "agent", "system_instance_id": "i-1"}}
    with server.client() as client:
        first = client.post("/v1/uploads/stream", json=body)
        again = client.post("/v1/uploads/stream", json=body)
    assert first.json() == {"event_id": event["event_id"], "status": "processed"}
    assert again.json()["status"] == "duplicate"
    trace = server.trace(trace_id)
    assert trace["service"] == "agent" and trace["spans"][0]["name"] == "tool-call"


def test_bad_events_get_a_path_and_the_good_ones_are_stored(server: RunningServer) -> None:
    trace_id = "34" * 16
    good = span_event(trace_id, "3" * 16)
    bad_id = span_event("XYZ", "4" * 16)
    ends_early = span_event(trace_id, "5" * 16, end_time_unix_nano=1)
    not_an_event = {"hello": "world"}
    answer = post(server, [good, bad_id, ends_early, not_an_event])
    assert answer.status_code == 207
    body = answer.json()
    assert body["processed_events"] == 1 and body["failed_events"] == 3
    details = [e["details"] for e in body["errors"]]
    assert details[0].startswith("payload.trace_id: expected 32 lowercase hex")
    assert details[1].startswith("payload.end_time_unix_nano")
    assert details[2].startswith("event_id")
    assert all(e["retryable"] is False for e in body["errors"])
    assert server.trace(trace_id)["span_count"] == 1


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", {}, 400, "TR-INGEST-JSON"),
        (b"[1, 2]", {}, 400, "TR-INGEST-ENVELOPE"),
        (b'{"events": 5}', {}, 400, "TR-INGEST-ENVELOPE"),
        (b"\x1f\x8b\x08\x00garbage", {"content-encoding": "gzip"}, 400, "TR-INGEST-BODY"),
        (gzip.compress(b'{"events": []}')[:-6], {"content-encoding": "gzip"}, 400, None),
        (b"{}", {"content-encoding": "br"}, 415, "TR-INGEST-ENCODING"),
    ],
)
def test_unreadable_bodies_get_a_coded_4xx(
    server: RunningServer, body: bytes, headers: dict[str, str], status: int, code: str | None
) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/telemetry/batch",
            content=body,
            headers={"content-type": "application/json", **headers},
        )
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["code"] == code
    assert response.json()["message"]


def test_compression_bombs_and_oversized_bodies_get_413(tmp_path: Path) -> None:
    with running_server(tmp_path, max_body_bytes=1 << 20, max_decompressed_bytes=4 << 20) as server:
        bomb = gzip.compress(b" " * (64 << 20), 9)  # 64 MiB of spaces in ~64 KiB
        zbomb = zstandard.ZstdCompressor(level=19).compress(b" " * (64 << 20))
        with server.client() as client:
            for data, encoding in ((bomb, "gzip"), (zbomb, "zstd")):
                response = client.post(
                    "/v1/telemetry/batch", content=data,
                    headers={"content-encoding": encoding, "content-type": "application/json"},
                )  # fmt: skip
                assert response.status_code == 413
                assert response.json()["code"] == "TR-INGEST-TOO-LARGE"
            big = client.post("/v1/telemetry/batch", content=b" " * (2 << 20))
            assert big.status_code == 413
            assert client.get("/health").status_code == 200


def test_gzip_and_zstd_bodies_are_read(server: RunningServer) -> None:
    trace_id = "56" * 16
    for i, encoding in enumerate(("gzip", "zstd"), start=1):
        raw = orjson.dumps({"events": [span_event(trace_id, f"{i:016x}")]})
        data = gzip.compress(raw) if encoding == "gzip" else zstandard.compress(raw)
        with server.client() as client:
            response = client.post(
                "/v1/telemetry/batch", content=data, headers={"content-encoding": encoding}
            )
        assert response.status_code == 200, response.text
    assert server.trace(trace_id)["span_count"] == 2


def test_keys_scopes_and_projects_are_enforced(server: RunningServer) -> None:
    store = SqliteStore(str(server.database))
    try:
        ingest_b, _ = make_key(store, "b", frozenset({"ingest"}))
        read_b, _ = make_key(store, "b", frozenset({"read"}))
    finally:
        store.close()
    trace_id = "78" * 16
    event = span_event(trace_id, "7" * 16)
    with server.client(None) as anonymous:
        missing = anonymous.post("/v1/telemetry/batch", json={"events": [event]})
    assert missing.status_code == 401 and missing.json()["code"] == "TR-AUTH-MISSING"
    with server.client("tr_not_a_real_key") as stranger:
        assert stranger.get(f"/v1/traces/{trace_id}").json()["code"] == "TR-AUTH-INVALID"
    assert post(server, [event]).status_code == 200  # project "default"
    with server.client(ingest_b) as writer_b:
        assert writer_b.post("/v1/telemetry/batch", json={"events": [event]}).status_code == 200
        refused = writer_b.get(f"/v1/traces/{trace_id}")
        assert refused.status_code == 403 and refused.json()["code"] == "TR-AUTH-SCOPE"
    with server.client(read_b) as reader_b:
        # Project b stored its own copy; default's trace is not b's to read.
        assert reader_b.get(f"/v1/traces/{trace_id}").json()["span_count"] == 1
        assert reader_b.post("/v1/telemetry/batch", json={"events": []}).status_code == 403
    only_default = "9a" * 16
    assert post(server, [span_event(only_default, "8" * 16)]).status_code == 200
    assert server.trace(only_default)["span_count"] == 1
    with server.client(read_b) as reader_b:
        hidden = reader_b.get(f"/v1/traces/{only_default}")
        assert hidden.status_code == 404 and hidden.json()["code"] == "TR-QUERY-NOT-FOUND"


def test_with_the_writer_process_turned_off_batches_are_written_by_a_thread(
    tmp_path: Path,
) -> None:
    settings = ServerSettings.from_env({"TRACERELAY_WRITER_PROCESS": "off"})
    assert settings.writer_process is False
    with pytest.raises(ConfigError) as refused:
        ServerSettings.from_env({"TRACERELAY_WRITER_PROCESS": "maybe"})
    assert refused.value.code == "TR-CONFIG-TYPE" and "WRITER_PROCESS" in str(refused.value)
    before = set(multiprocessing.active_children())
    trace_id = "ef" * 16
    events = [span_event(trace_id, f"{i:016x}") for i in range(1, 11)]
    with running_server(tmp_path, writer_process=False) as server:
        assert set(multiprocessing.active_children()) == before  # no writer started
        assert post(server, events).json()["processed_events"] == 10
        assert post(server, events).json()["duplicate_events"] == 10
        assert server.trace(trace_id)["span_count"] == 10
