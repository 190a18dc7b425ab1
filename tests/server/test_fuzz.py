"""Fuzzing the server from its own OpenAPI document (schemathesis), plus hostile bodies
by hand: never a 5xx, the server stays up, and what it had accepted is still there."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.server.support import ADMIN_KEY, RunningServer, running_server
from tracerelay.ids import new_event_id

KNOWN_TRACE = "f0" * 16


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("fuzz"), max_body_bytes=1 << 20) as running:
        event = {
            "event_id": new_event_id(), "event_type": "observation_create",
            "timestamp": time.time(),
            "payload": {"trace_id": KNOWN_TRACE, "span_id": "f" * 16, "name": "kept",
                        "start_time_unix_nano": 1, "end_time_unix_nano": 2},
        }  # fmt: skip
        with running.client() as client:
            assert client.post("/v1/telemetry/batch", json={"events": [event]}).status_code == 200
        yield running


def test_no_generated_request_gets_a_server_error(server: RunningServer) -> None:
    # Every operation of the server's own OpenAPI document, with requests generated from
    # it (bodies per the declared schemas included), sent with a valid key.
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/telemetry/batch", "/v1/traces/{trace_id}"}
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def check(case: Any) -> None:
            response = case.call(base_url=server.url, headers=headers)
            assert response.status_code < 500, (case.method, case.path, response.text)

        check()


HOSTILE: list[tuple[str, bytes, dict[str, str]]] = [
    ("truncated JSON", b'{"events": [{"event_id": "01', {}),
    (
        "wrong types",
        b'{"events": [{"event_id": 5, "event_type": [], "timestamp": "x", "payload": 7}]}',
        {},
    ),
    ("deep nesting", b'{"events": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", {}),
    (
        "huge number",
        b'{"events": [{"event_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "event_type": '
        b'"metric", "timestamp": 1e999, "payload": {"name": "m", "value": 1}}]}',
        {},
    ),
    ("nul bytes", b'{"events": [{"event_id": "\\u0000", "payload": {"name": "\\u0000"}}]}', {}),
    ("gzip bomb", gzip.compress(b"[" * (32 << 20)), {"content-encoding": "gzip"}),
    ("not gzip", b"plain", {"content-encoding": "gzip"}),
    ("oversized", b" " * (2 << 20), {}),
    ("invalid utf-8", b'{"events": ["\xff\xfe"]}', {}),
    ("empty", b"", {}),
]


@pytest.mark.parametrize(("label", "body", "headers"), HOSTILE, ids=[h[0] for h in HOSTILE])
@pytest.mark.parametrize("path", ["/v1/telemetry/batch", "/v1/uploads/stream"])
def test_hostile_bodies_get_4xx_and_the_server_lives_on(
    server: RunningServer, label: str, body: bytes, headers: dict[str, str], path: str
) -> None:
    with server.client() as client:
        try:
            response = client.post(path, content=body, headers=headers)
        except httpx.RemoteProtocolError:
            response = None  # the server may close on an oversized body; it must live on
        if response is not None:
            # A batch whose events are all bad is readable: 207, each event refused.
            refused = response.status_code == 207 and response.json()["processed_events"] == 0
            assert refused or 400 <= response.status_code < 500, (label, response.text)
        assert client.get("/health").status_code == 200
        kept = client.get(f"/v1/traces/{KNOWN_TRACE}")
        assert kept.status_code == 200 and kept.json()["spans"][0]["name"] == "kept"
