"""Server ingest over real HTTP on 127.0.0.1: stored spans per second, request latency, and
the time to read back one large trace, on SQLite and on PostgreSQL.

What one run measures (issue 4, "Bar", ``bench/ingest.py``), for each backend of
``--backends`` (default ``sqlite,postgresql``):

- ``tracerelay serve`` started as its own process on a fresh database: a new
  SQLite file, or a new database on a PostgreSQL server the bench starts itself
  (``initdb`` and ``pg_ctl`` of ``/usr/lib/postgresql/*/bin``, as the
  ``postgres`` user when run as root, in a temporary folder; stopped at the
  end). A client process sends SDK-shaped batches (``POST
  /v1/telemetry/batch``, gzip JSON, 500 spans each, every span with a few
  attributes; random trace and span ids and clock-time starts, as the SDK makes
  them) from several connections at once for a fixed number of batches.
  The figure is **stored** spans per second: the rows counted in the database's
  ``spans`` table after the server was stopped, over the time from the first
  request to the last answer (a 200 is sent only after the commit, so an
  answered batch is a stored one), and the p50/p99 of request latency.
- A trace of 10,000 spans (20 batches of one trace), then ``GET
  /v1/traces/{id}``: the median time of 5 reads, against the 200 ms target.
- The same OTLP/HTTP protobuf load (500-span requests, span ids unique across
  traces as random ids are) into ``POST /v1/traces`` of a fresh tracerelay on
  a fresh database of that backend (the same traces: ids and times as above).

Then — with ``--phoenix PATH`` (the ``phoenix`` command of an
``arize-phoenix`` install in its own venv) — the same OTLP load into Arize
Phoenix on its default SQLite. Phoenix acknowledges first and writes later, so
for OTLP the figure is the spans found in the database over the time until the
count stopped growing (for Phoenix, unchanged for 30 s).

If PostgreSQL is not installed (no ``/usr/lib/postgresql/*/bin/initdb``) or
does not start, its figures are skipped with a line saying why, and the rest
runs. Targets are printed, not asserted. Everything binds 127.0.0.1; the server
processes and their databases are removed at the end. Run: ``python
bench/ingest.py [--batches 200] [--connections 4] [--backends sqlite,postgresql]``.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
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
    """``tracerelay serve`` on the database ``database_url`` names (``sqlite:///path`` or
    ``postgresql://user@host:port/db``), in a child process."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        command = "from tracerelay.cli import main; raise SystemExit(main())"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", command, "serve", "--port", str(self.port),
             "--database-url", database_url, "--bootstrap-key", KEY],
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
        """The rows in tracerelay's ``spans`` table, on either backend."""
        if self.database_url.startswith("sqlite:///"):
            path = self.database_url.removeprefix("sqlite:///")
            with sqlite3.connect(path) as db:
                return int(db.execute("SELECT count(*) FROM spans").fetchone()[0])
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as db:
            row = db.execute("SELECT count(*) FROM spans").fetchone()
            return int(row[0]) if row else 0


def sqlite_database(directory: str, name: str) -> str:
    """The URL of a new SQLite file in its own folder under ``directory``."""
    folder = os.path.join(directory, name)
    os.makedirs(folder)
    return f"sqlite:///{os.path.join(folder, 'tracerelay.db')}"


class PostgresUnavailable(Exception):
    """PostgreSQL is not installed here, or its server did not start."""


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: run them as the postgres user then.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class Postgres:
    """A PostgreSQL server of its own on 127.0.0.1 and a free port, in a temporary folder
    (``initdb``, ``pg_ctl``); a context manager that stops it (``-m immediate``) and
    removes its folder. Raises ``PostgresUnavailable`` when it cannot be started."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise PostgresUnavailable(
                "not installed: no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)"
            )
        self.bin_dir = os.path.dirname(found[-1])
        # Under /tmp itself, owned by postgres when run as root: it must reach its data.
        self.directory = tempfile.mkdtemp(prefix="tracerelay-bench-pg-", dir="/tmp")
        self.data = os.path.join(self.directory, "data")
        self.port = free_port()
        self.url = f"postgresql://postgres@{HOST}:{self.port}"
        try:
            if os.geteuid() == 0:
                shutil.chown(self.directory, "postgres")
            self._run([f"{self.bin_dir}/initdb", "-D", self.data, "-A", "trust", "-U",
                       "postgres"])  # fmt: skip
            options = f"-p {self.port} -k {self.directory} -c listen_addresses={HOST}"
            self._run([f"{self.bin_dir}/pg_ctl", "-D", self.data, "-o", options, "-l",
                       os.path.join(self.directory, "log"), "-w", "start"])  # fmt: skip
        except (OSError, LookupError, subprocess.SubprocessError) as error:
            self.stop()
            raise PostgresUnavailable(f"did not start: {error}") from error
        except PostgresUnavailable:
            self.stop()
            raise

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(_as_postgres(command), check=False, capture_output=True, timeout=120)
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            log = os.path.join(self.directory, "log")
            if os.path.exists(log):  # pg_ctl points to its log: the reason is there
                with open(log, errors="replace") as file:
                    lines += file.read().strip().splitlines()
            last = lines[-1] if lines else ""
            raise PostgresUnavailable(
                f"did not start: {os.path.basename(command[0])} exited {done.returncode}: {last}"
            )

    def new_database(self, name: str) -> str:
        """The URL of a new, empty database on this server."""
        import psycopg

        database = f"bench_{name}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{self.url}/postgres", autocommit=True) as db:
            db.execute(f"CREATE DATABASE {database}")
        return f"{self.url}/{database}"

    def stop(self) -> None:
        if os.path.isdir(self.data):
            subprocess.run(
                _as_postgres([f"{self.bin_dir}/pg_ctl", "-D", self.data, "-m", "immediate",
                              "stop"]),
                check=False, capture_output=True, timeout=60,
            )  # fmt: skip
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def batch(trace_id: str, first_span: int, started_ns: int) -> bytes:
    """One SDK batch: SPANS_PER_BATCH spans of trace ``trace_id`` under its root span,
    stamped from ``started_ns`` on, with random span ids — as the SDK sends them."""
    now = time.time()
    root = span_id_of(trace_id, 0)
    events = [
        {
            "event_id": new_event_id(),
            "event_type": "observation_create",
            "timestamp": now,
            "payload": {
                "trace_id": trace_id,
                "span_id": span_id_of(trace_id, first_span + i),
                "parent_span_id": None if first_span + i == 0 else root,
                "name": f"operation-{i % 20}",
                "kind": "internal",
                "type": "span",
                "start_time_unix_nano": started_ns + 1_000 * (first_span + i),
                "end_time_unix_nano": started_ns + 50_000_000 + 1_000 * (first_span + i),
                "status": {"code": "unset", "message": ""},
                "attributes": {"http.method": "GET", "http.route": "/orders", "n": i},
                "sequence": first_span + i,
            },
        }
        for i in range(SPANS_PER_BATCH)
    ]
    body = {"events": events, "resource": {"service.name": "bench"}}
    return gzip.compress(orjson.dumps(body), 3)


def span_id_of(trace_id: str, n: int) -> str:
    """Span ``n`` of a trace: random-looking 64-bit ids, the same on every call."""
    return hashlib.blake2b(f"{trace_id}/{n}".encode(), digest_size=8).hexdigest()


def traces(count: int) -> list[tuple[str, int]]:
    """``count`` (trace id, start) pairs: random 128-bit ids, starts 10 ms apart from now,
    as a service's traces arrive (spans stamped at one instant would all land on one
    place of the start index, which no real load does)."""
    now = time.time_ns()
    return [(os.urandom(16).hex(), now + 10_000_000 * n) for n in range(count)]


SDK_HEADERS = {
    "Authorization": f"Bearer {KEY}",
    "Content-Encoding": "gzip",
    "Content-Type": "application/json",
}
OTLP_HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/x-protobuf"}


def otlp_batch(trace_id_hex: str, started_ns: int) -> bytes:
    """An OTLP ExportTraceServiceRequest of one trace of SPANS_PER_BATCH spans (the same
    ids and times ``batch`` gives that trace)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    trace_id = bytes.fromhex(trace_id_hex)
    root = bytes.fromhex(span_id_of(trace_id_hex, 0))
    spans = [
        Span(
            trace_id=trace_id,
            span_id=bytes.fromhex(span_id_of(trace_id_hex, i)),
            parent_span_id=b"" if i == 0 else root,
            name=f"operation-{i % 20}",
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=started_ns + 1_000 * i,
            end_time_unix_nano=started_ns + 50_000_000 + 1_000 * i,
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
    return bytes(ExportTraceServiceRequest(resource_spans=[resource]).SerializeToString())


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


BACKENDS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


@dataclass
class SdkRun:
    stored: int
    seconds: float
    p50_ms: float
    p99_ms: float
    trace_spans: int
    trace_ms: float

    @property
    def rate(self) -> float:
        return self.stored / self.seconds if self.seconds else 0.0


def sdk_run(server: Server, bodies: list[bytes], connections: int) -> SdkRun:
    """Send the SDK batches, then a trace of 20 batches read back 5 times; the stored count
    is taken after the server stopped, less the big trace's spans."""
    try:
        seconds, latencies, _ = send_all(server.url, bodies, connections)
        big = "f" * 32
        started = time.time_ns()
        big_bodies = [batch(big, k * SPANS_PER_BATCH, started) for k in range(20)]
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
    return SdkRun(
        server.stored_spans() - 20 * SPANS_PER_BATCH, seconds,
        1000 * percentile(latencies, 50), 1000 * percentile(latencies, 99),
        spans, 1000 * statistics.median(reads),
    )  # fmt: skip


def measure(
    label: str,
    new_database: Callable[[str], str],
    sdk_bodies: list[bytes],
    otlp_bodies: list[bytes],
    connections: int,
) -> OtlpRun:
    """The SDK load, the big trace's read and the OTLP load into tracerelay on one backend,
    each on a fresh database ``new_database(name)`` gives; prints them, returns the OTLP run."""
    sdk = sdk_run(Server(new_database("sdk")), sdk_bodies, connections)
    print(
        f"SDK batches → tracerelay ({label}), gzip JSON, {SPANS_PER_BATCH} spans each, "
        f"{connections} connections: {sdk.stored:,} spans stored in {sdk.seconds:.2f} s = "
        f"{sdk.rate:,.0f} stored spans/s (target ≥ {TARGET_STORED:,}); "
        f"latency p50 {sdk.p50_ms:.0f} ms, p99 {sdk.p99_ms:.0f} ms"
    )
    print(
        f"one trace of {sdk.trace_spans:,} spans read back from tracerelay ({label}) in "
        f"{sdk.trace_ms:.0f} ms (median of 5; target < {TARGET_TRACE_MS:.0f} ms)"
    )
    otlp = otlp_run(Server(new_database("otlp")), otlp_bodies, connections)
    print(f"OTLP protobuf → tracerelay ({label}), {SPANS_PER_BATCH} spans/request: {otlp}")
    return otlp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=200, help="batches of 500 spans")
    parser.add_argument("--connections", type=int, default=4, help="concurrent clients")
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="tracerelay's databases to measure, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--phoenix",
        default=os.environ.get("PHOENIX_BIN"),
        help="the `phoenix` command of an arize-phoenix install (its own venv), for the peer",
    )
    parser.add_argument(
        "--phoenix-batches",
        type=int,
        default=20,
        help="OTLP requests of 500 spans for Phoenix (it stores ~50-200 spans/s: "
        "keep it bounded; default %(default)s)",
    )
    args = parser.parse_args()
    backends = [name.strip().lower() for name in args.backends.split(",") if name.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown or not backends:
        parser.error(f"--backends: {', '.join(unknown) or 'none given'}; choose from "
                     f"{', '.join(BACKENDS)}")  # fmt: skip
    directory = tempfile.mkdtemp(prefix="tracerelay-bench-ingest-")
    print(f"bench/ingest.py: python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    try:
        load = traces(args.batches)  # the same traces for both encodings
        sdk_bodies = [batch(trace_id, 0, start) for trace_id, start in load]
        otlp = [otlp_batch(trace_id, start) for trace_id, start in load]
        ours: dict[str, OtlpRun] = {}
        for backend in dict.fromkeys(backends):
            label = BACKENDS[backend]
            if backend == "sqlite":
                ours[label] = measure(
                    label, lambda name: sqlite_database(directory, name), sdk_bodies, otlp,
                    args.connections,
                )  # fmt: skip
                continue
            try:
                postgres = Postgres()
            except PostgresUnavailable as reason:
                print(f"tracerelay (PostgreSQL): figures skipped, PostgreSQL {reason}")
                continue
            with postgres:
                ours[label] = measure(
                    label, postgres.new_database, sdk_bodies, otlp, args.connections
                )
        if args.phoenix:
            # Phoenix acknowledges first and writes later, in bursts: wait longer for it.
            theirs = otlp_run(
                Phoenix(args.phoenix, directory), otlp[: args.phoenix_batches], args.connections,
                30.0,
            )  # fmt: skip
            print(f"Arize Phoenix (its default SQLite), the same OTLP load: {theirs}")
            for label, run in ours.items():
                print(
                    f"stored spans/s, tracerelay ({label}) ÷ Phoenix: "
                    f"{run.rate / max(theirs.rate, 1e-9):.1f}×"
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
