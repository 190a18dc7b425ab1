"""Server ingest over real HTTP on 127.0.0.1: stored spans per second, request latency, and
the time to read back one large trace.

What one run measures (issue 4, "Bar", ``bench/ingest.py``):

- ``tracerelay serve`` on SQLite, started as its own process on a fresh database;
  a client process sends SDK-shaped batches (``POST /v1/telemetry/batch``, gzip
  JSON, 500 spans each, every span with a few attributes) from several
  connections at once for a fixed number of batches. The figure is **stored**
  spans per second: the rows counted in the database after the server was
  stopped, over the time from the first request to the last answer (a 200 is
  sent only after the commit, so an answered batch is a stored one), and the
  p50/p99 of request latency.
- A trace of 10,000 spans (20 batches of one trace), then ``GET
  /v1/traces/{id}``: the median time of 5 reads, against the 200 ms target.

Peers (OTLP protobuf into this server, PostgreSQL, Arize Phoenix) are not yet
in this script; see docs/design.md. Targets are printed, not asserted.
Everything binds 127.0.0.1; the server process and its database are removed at
the end. Run: ``python bench/ingest.py [--batches 200] [--connections 4]``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import orjson

from tracerelay.ids import new_event_id

HOST = "127.0.0.1"
KEY = "tr_bench_ingest_key_0123456789abcdef"
SPANS_PER_BATCH = 500
TARGET_STORED = 20_000
TARGET_TRACE_MS = 200.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Server:
    """``tracerelay serve`` on a fresh SQLite file, in a child process."""

    def __init__(self, directory: str) -> None:
        self.database = os.path.join(directory, "tracerelay.db")
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        command = "from tracerelay.cli import main; raise SystemExit(main())"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", command, "serve", "--port", str(self.port),
             "--database-url", f"sqlite:///{self.database}", "--bootstrap-key", KEY],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("tracerelay serve did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def stored_spans(self) -> int:
        with sqlite3.connect(self.database) as db:
            return int(db.execute("SELECT count(*) FROM spans").fetchone()[0])


def batch(trace_id: str, first_span: int) -> bytes:
    now = time.time()
    events = [
        {
            "event_id": new_event_id(),
            "event_type": "observation_create",
            "timestamp": now,
            "payload": {
                "trace_id": trace_id,
                "span_id": f"{first_span + i + 1:016x}",
                "parent_span_id": None if first_span + i == 0 else f"{1:016x}",
                "name": f"operation-{i % 20}",
                "kind": "internal",
                "type": "span",
                "start_time_unix_nano": 1_700_000_000_000_000_000 + first_span + i,
                "end_time_unix_nano": 1_700_000_000_050_000_000 + first_span + i,
                "status": {"code": "unset", "message": ""},
                "attributes": {"http.method": "GET", "http.route": "/orders", "n": i},
                "sequence": first_span + i,
            },
        }
        for i in range(SPANS_PER_BATCH)
    ]
    body = {"events": events, "resource": {"service.name": "bench"}}
    return gzip.compress(orjson.dumps(body), 3)


def send_all(url: str, bodies: list[bytes], connections: int) -> tuple[float, list[float]]:
    """Send every body from ``connections`` threads; (seconds, latencies)."""
    lock = threading.Lock()
    pending = iter(bodies)
    latencies: list[float] = []
    failures: list[str] = []
    headers = {
        "Authorization": f"Bearer {KEY}",
        "Content-Encoding": "gzip",
        "Content-Type": "application/json",
    }

    def worker() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            while True:
                with lock:
                    body = next(pending, None)
                if body is None:
                    return
                started = time.perf_counter()
                response = client.post("/v1/telemetry/batch", content=body)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} batches failed, first: {failures[0]}")
    return time.perf_counter() - started, latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=200, help="batches of 500 spans")
    parser.add_argument("--connections", type=int, default=4, help="concurrent clients")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="tracerelay-bench-ingest-")
    print(f"bench/ingest.py: python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    try:
        server = Server(directory)
        try:
            bodies = [batch(f"{b + 1:032x}", 0) for b in range(args.batches)]
            seconds, latencies = send_all(server.url, bodies, args.connections)
            big = "f" * 32
            big_bodies = [batch(big, k * SPANS_PER_BATCH) for k in range(20)]
            send_all(server.url, big_bodies, 1)
            reads: list[float] = []
            with httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
            ) as client:
                for _ in range(5):
                    started = time.perf_counter()
                    response = client.get(f"/v1/traces/{big}")
                    reads.append(time.perf_counter() - started)
                    assert response.status_code == 200
                    spans = len(response.json()["spans"])
        finally:
            server.stop()
        stored = server.stored_spans() - 20 * SPANS_PER_BATCH
        rate = stored / seconds
        trace_ms = 1000 * statistics.median(reads)
        p50, p99 = (1000 * percentile(latencies, p) for p in (50, 99))
        print(
            f"SQLite, SDK batches (gzip JSON, {SPANS_PER_BATCH} spans), "
            f"{args.connections} connections: {stored:,} spans stored in {seconds:.2f} s = "
            f"{rate:,.0f} stored spans/s (target ≥ {TARGET_STORED:,}); "
            f"latency p50 {p50:.0f} ms, p99 {p99:.0f} ms"
        )
        print(
            f"one trace of {spans:,} spans read back in {trace_ms:.0f} ms "
            f"(median of 5; target < {TARGET_TRACE_MS:.0f} ms)"
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
