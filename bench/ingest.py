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

- The same OTLP/HTTP protobuf load (500-span requests, span ids unique across
  traces as random ids are) into ``POST /v1/traces`` of a fresh tracerelay,
  and — with ``--phoenix PATH`` (the ``phoenix`` command of an
  ``arize-phoenix`` install in its own venv) — into Arize Phoenix on its
  default SQLite. Phoenix acknowledges first and writes later, so for both the
  figure is the spans found in the database over the time until the count
  stopped growing (for Phoenix, unchanged for 30 s).

PostgreSQL is not yet in this script. Targets are printed, not asserted.
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
from dataclasses import dataclass

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
        os.makedirs(directory, exist_ok=True)
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


SDK_HEADERS = {
    "Authorization": f"Bearer {KEY}",
    "Content-Encoding": "gzip",
    "Content-Type": "application/json",
}
OTLP_HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/x-protobuf"}


def otlp_batch(n: int) -> bytes:
    """An OTLP ExportTraceServiceRequest of one trace of SPANS_PER_BATCH spans."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    trace_id = (n + 1).to_bytes(16, "big")
    spans = [
        Span(
            trace_id=trace_id,
            # Span ids unique across traces, as random 64-bit ids are in practice.
            span_id=(n * SPANS_PER_BATCH + i + 1).to_bytes(8, "big"),
            parent_span_id=b"" if i == 0 else (n * SPANS_PER_BATCH + 1).to_bytes(8, "big"),
            name=f"operation-{i % 20}",
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=1_700_000_000_000_000_000 + i,
            end_time_unix_nano=1_700_000_000_050_000_000 + i,
            attributes=[
                KeyValue(key="http.method", value=AnyValue(string_value="GET")),
                KeyValue(key="http.route", value=AnyValue(string_value="/orders")),
                KeyValue(key="n", value=AnyValue(int_value=i)),
            ],
        )
        for i in range(SPANS_PER_BATCH)
    ]
    resource = ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])
    resource.resource.attributes.append(
        KeyValue(key="service.name", value=AnyValue(string_value="bench"))
    )
    return ExportTraceServiceRequest(resource_spans=[resource]).SerializeToString()


def send_all(
    url: str,
    bodies: list[bytes],
    connections: int,
    path: str = "/v1/telemetry/batch",
    headers: dict[str, str] = SDK_HEADERS,
    strict: bool = True,
) -> tuple[float, list[float], int]:
    """Send every body from ``connections`` threads; (seconds, latencies, answered 200).
    ``strict``: any other answer fails the run (a peer may shed load instead)."""
    lock = threading.Lock()
    pending = iter(bodies)
    latencies: list[float] = []
    failures: list[str] = []

    def worker() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            while True:
                with lock:
                    body = next(pending, None)
                if body is None:
                    return
                started = time.perf_counter()
                response = client.post(path, content=body)
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
    if failures and strict:
        raise RuntimeError(f"{len(failures)} batches failed, first: {failures[0]}")
    return time.perf_counter() - started, latencies, len(latencies) - len(failures)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=200, help="batches of 500 spans")
    parser.add_argument("--connections", type=int, default=4, help="concurrent clients")
    parser.add_argument(
        "--phoenix",
        default=os.environ.get("PHOENIX_BIN"),
        help="the `phoenix` command of an arize-phoenix install (its own venv), for the peer",
    )
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="tracerelay-bench-ingest-")
    print(f"bench/ingest.py: python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    try:
        server = Server(directory)
        try:
            bodies = [batch(f"{b + 1:032x}", 0) for b in range(args.batches)]
            seconds, latencies, _ = send_all(server.url, bodies, args.connections)
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
        otlp = [otlp_batch(n) for n in range(args.batches)]
        ours = otlp_run(Server(os.path.join(directory, "otlp")), otlp, args.connections)
        print(f"SQLite, OTLP protobuf ({SPANS_PER_BATCH} spans/request): {ours}")
        if args.phoenix:
            # Phoenix acknowledges first and writes later, in bursts: wait longer for it.
            theirs = otlp_run(Phoenix(args.phoenix, directory), otlp, args.connections, 30.0)
            print(f"Arize Phoenix (its default SQLite), the same OTLP load: {theirs}")
            print(
                f"stored spans/s, tracerelay ÷ Phoenix: {ours.rate / max(theirs.rate, 1e-9):.1f}×"
            )
        else:
            print("Arize Phoenix: not measured (give --phoenix PATH or PHOENIX_BIN)")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class OtlpRun:
    sent: int
    acknowledged: int
    stored: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.stored / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        return (
            f"{self.acknowledged:,} of {self.sent:,} spans acknowledged, {self.stored:,} stored "
            f"in {self.seconds:.2f} s = {self.rate:,.0f} stored spans/s; latency p50 "
            f"{self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms"
        )


def otlp_run(
    server: Server | Phoenix, bodies: list[bytes], connections: int, settle: float = 5.0
) -> OtlpRun:
    """Send the OTLP bodies, then wait (bounded) until the stored count stops growing:
    the time is until the last span stored, so a server that acknowledges first and
    writes later is measured by what it wrote."""
    try:
        started = time.perf_counter()
        _, latencies, answered = send_all(
            server.url, bodies, connections, "/v1/traces", OTLP_HEADERS, strict=False
        )
        stored, stored_at, deadline = -1, time.perf_counter(), time.perf_counter() + 300
        while time.perf_counter() < deadline:
            count = server.stored_spans()
            if count != stored:
                stored, stored_at = count, time.perf_counter()
            elif time.perf_counter() - stored_at > settle:
                break
            time.sleep(0.5)
    finally:
        server.stop()
    return OtlpRun(
        len(bodies) * SPANS_PER_BATCH, answered * SPANS_PER_BATCH, server.stored_spans(),
        stored_at - started, 1000 * percentile(latencies, 50), 1000 * percentile(latencies, 99),
    )  # fmt: skip


class Phoenix:
    """``phoenix serve`` (arize-phoenix, its default SQLite) in a child process."""

    def __init__(self, command: str, directory: str) -> None:
        self.directory = os.path.join(directory, "phoenix")
        os.makedirs(self.directory)
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        env = dict(os.environ, PHOENIX_WORKING_DIR=self.directory, PHOENIX_PORT=str(self.port),
                   PHOENIX_HOST=HOST, PHOENIX_GRPC_PORT=str(free_port()))  # fmt: skip
        self.proc = subprocess.Popen(
            [command, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("phoenix serve did not start")

    def stored_spans(self) -> int:
        try:
            with sqlite3.connect(os.path.join(self.directory, "phoenix.db"), timeout=30) as db:
                return int(db.execute("SELECT count(*) FROM spans").fetchone()[0])
        except sqlite3.Error:
            return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


if __name__ == "__main__":
    main()
