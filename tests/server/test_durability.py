"""An acknowledgement is a promise: spans answered 200 survive ``kill -9`` of the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.server.support import ADMIN_KEY, free_port
from tracerelay.ids import new_event_id

SPANS_PER_BATCH = 200


def start_server(database_url: str, port: int) -> subprocess.Popen[bytes]:
    command = "from tracerelay.cli import main; raise SystemExit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", command, "serve", "--port", str(port),
         "--database-url", database_url, "--bootstrap-key", ADMIN_KEY],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("tracerelay serve did not start")


def batch(trace_id: str) -> dict[str, object]:
    now = time.time()
    return {
        "events": [
            {
                "event_id": new_event_id(),
                "event_type": "observation_create",
                "timestamp": now,
                "payload": {
                    "trace_id": trace_id,
                    "span_id": f"{i + 1:016x}",
                    "parent_span_id": None if i == 0 else f"{1:016x}",
                    "name": f"s{i}",
                    "start_time_unix_nano": 1_700_000_000_000_000_000 + i,
                    "end_time_unix_nano": 1_700_000_000_100_000_000 + i,
                    "attributes": {"i": i},
                },
            }
            for i in range(SPANS_PER_BATCH)
        ]
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_acknowledged_span_survives_kill_9(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    database = (
        f"sqlite:///{tmp_path / 'tracerelay.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    proc = start_server(database, port)
    acknowledged: list[str] = []
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=10) as client:

            def send(n: int) -> str | None:
                trace_id = f"{n + 1:032x}"
                try:
                    response = client.post("/v1/telemetry/batch", json=batch(trace_id))
                except httpx.TransportError:
                    return None  # killed mid-request: not acknowledged, no promise
                return trace_id if response.status_code == 200 else None

            with ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(send, n) for n in range(60)]
                # Kill while batches are still arriving, right after some were answered.
                while sum(f.done() for f in futures) < 30:
                    time.sleep(0.005)
                os.kill(proc.pid, signal.SIGKILL)
                acknowledged = [t for f in futures if (t := f.result()) is not None]
    finally:
        proc.kill()
        proc.wait(10)
    assert len(acknowledged) >= 30
    proc = start_server(database, port)
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
            for trace_id in acknowledged:
                response = client.get(f"/v1/traces/{trace_id}")
                assert response.status_code == 200, trace_id
                assert response.json()["span_count"] == SPANS_PER_BATCH
    finally:
        proc.terminate()
        proc.wait(10)
