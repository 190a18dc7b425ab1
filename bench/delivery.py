"""Delivery over real HTTP on 127.0.0.1: tracerelay's HTTP exporter, and OpenTelemetry's OTLP/HTTP.

One run prints four measurements (issue 3, "Bar", ``bench/delivery.py``) and a
summary with each target beside its figure:

(a) Caller-side cost per span while the server is healthy, slow and down.
    A traced function setting two attributes runs N times per repeat, with
    ``tracerelay.init(exporter="http")`` pointed at ``tracerelay mock`` answering
    at once, ``tracerelay mock`` holding every reply 1 s (each its own process,
    as a server is: in this process its request handling would compete with
    the traced code for the GIL), and a closed port. The
    figure is CPU time of the calling thread (``time.thread_time_ns``) per span
    over the bare call of the same work, median of the repeats: what the traced
    code pays, whatever the network does. Target: the three within 10 % of each
    other (spread = (max − min) / min). Each case runs once per pass, with its
    own client and spool directory, and ends with a shutdown (deadline 2 s when
    the server is slow or down); passes alternate the order of the cases so a
    drift of the machine's speed weighs on all three alike, and "per pass"
    shows how steady the figure is. Delivery counters and the time each
    shutdown took are printed beside it; "wall" shows the background threads
    competing for the GIL.

(b) End-to-end throughput into one local sink: N flat spans (two attributes)
    made as fast as a loop makes them, then a flush; the clock runs from the
    first span to the moment the sink received the last one. tracerelay uses
    its defaults; OpenTelemetry uses ``BatchSpanProcessor`` with its defaults
    and ``OTLPSpanExporter(endpoint=f"{sink}/v1/traces")``. spans/s counts
    spans the sink received (distinct ids), so a dropped span does not count.
    "dropped" is what each SDK lost: tracerelay's own counters (pipeline and
    delivery) and N − received; for OpenTelemetry, N − received. Background
    CPU per span is the benchmark process's CPU (``process_time``) from the
    first span until the flush returned, minus the calling thread's CPU during
    the loop, divided by N: every thread of the SDK, plus the part of the flush
    the calling thread does itself. Rounds alternate which SDK goes first;
    the summary takes medians. Targets: tracerelay ≥ 5× OpenTelemetry's spans/s,
    ≤ 5 µs background CPU per span, zero dropped.

(c) Bytes per span, from the sink's view of (b): tracerelay's request bodies
    decompressed ("raw JSON", batch envelope and resource included) and as sent
    ("wire"), their ratio (target ≥ 5×), and OTLP protobuf bytes on the wire.

(d) Instant mode (``mode="instant"``): spans made at a moderate, steady rate;
    latency = time the sink finished reading the request − the span's
    ``end_time_unix_nano``, p50/p99/max. Both clocks are this host's wall
    clock (the SDK's is the monotonic clock anchored to it), so the figure
    includes the pipeline wake-up, encoding, the HTTP round trip's first half
    and the sink's read. "spans per request" shows whether spans share requests.

(e) A slow server: a ``MockServer`` holding every answer ``--slow-latencies``
    seconds (``Faults(latency=...)``), N spans made as fast as a loop makes
    them, then a flush; spans/s = N ÷ (first span → the flush returned). Once
    with the defaults (requests in flight adaptive, up to
    ``connection_pool_size`` = 10) and once with ``connection_pool_size=1``
    (one request at a time, as before concurrency). "at server" is the most
    requests the server held at once; "limit" the SDK's ``in_flight_limit``
    after the flush; CPU µs/span the process's CPU over the run ÷ N (traced
    loop, pipeline, sender threads; the mock's threads mostly sleep).

The sink is a threaded stdlib HTTP server defined in this file and run as a
child process (``--sink``) bound to 127.0.0.1:0: a collector is another
process in real life, and keeping it out of this one keeps its JSON and
protobuf parsing out of the measured CPU and off this process's GIL. It
accepts ``POST /v1/telemetry/batch`` (JSON, gzip or not), ``POST
/v1/uploads/stream``, ``POST /v1/traces`` (OTLP protobuf, answered with an
empty ``ExportTraceServiceResponse``) and ``GET /health``, and answers 200 at
once; ``/bench/stats`` and ``/bench/reset`` are its control endpoints. The
mock servers of (a) run in this process, as tests use them.

Everything binds 127.0.0.1 only; every server, process and spool directory
started here is ended or removed before exit, and a watchdog (``--time-limit``)
ends a stuck run. The targets are printed, not asserted. Run:
``python bench/delivery.py [--spans 50000] [--rounds 3] [--caller-spans 20000] ...``
"""

from __future__ import annotations

import argparse
import gc
import gzip
import importlib.metadata
import logging
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import orjson

import tracerelay
from tracerelay.mock import Faults, MockServer

SERVICE = "bench-delivery"
HOST = "127.0.0.1"
BATCH_PATH = "/v1/telemetry/batch"
STREAM_PATH = "/v1/uploads/stream"
OTLP_PATH = "/v1/traces"
WARMUP_SPANS = 2_000  # (a): starts the SDK's threads and warms caches before measuring
THROUGHPUT_WARMUP = 1_000  # (b): opens the connections; the sink is reset afterwards
OTEL_WARMUP = 500  # stays under OpenTelemetry's queue of 2048: nothing dropped in warm-up
FLUSH_TIMEOUT_S = 120.0
SETTLE_S = 1.0  # the sink's count unchanged this long after a flush: nothing more is coming
SINK_START_TIMEOUT_S = 30.0
MOCK_MAX_SECONDS = 1800  # a `tracerelay mock` child ends by itself after this, whatever happens
# Shutdown deadline per case of (a): a healthy server gets the time to take everything;
# against a slow or absent one the rest goes to the spool, which is the point.
HEALTHY, SLOW, DOWN = "healthy", "slow (1 s replies)", "down (closed port)"
SHUTDOWN_S = {HEALTHY: 60.0, SLOW: 2.0, DOWN: 2.0}

TARGET_SPREAD = 0.10
TARGET_RATIO = 5.0
TARGET_BACKGROUND_US = 5.0
TARGET_COMPRESSION = 5.0

_LIVE_DIRS: set[str] = set()  # spool directories to remove, even from the watchdog


# -- the sink (runs in a child process) ---------------------------------------------------


@dataclass
class Tally:
    """What the sink received since its last reset."""

    ids: dict[str, int] = field(default_factory=dict)
    spans: int = 0  # distinct span events
    deliveries: int = 0  # every event received, repeats included
    requests: int = 0
    gzip_requests: int = 0
    wire_bytes: int = 0
    raw_bytes: int = 0
    last_ns: int = 0  # wall time the last new event was received
    latencies_ns: list[int] = field(default_factory=list)
    otlp_spans: int = 0
    otlp_requests: int = 0
    otlp_wire_bytes: int = 0
    otlp_raw_bytes: int = 0
    otlp_last_ns: int = 0

    def summary(self, *, latencies: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "spans": self.spans,
            "events": len(self.ids),
            "duplicates": self.deliveries - len(self.ids),
            "requests": self.requests,
            "gzip_requests": self.gzip_requests,
            "wire_bytes": self.wire_bytes,
            "raw_bytes": self.raw_bytes,
            "last_ns": self.last_ns,
            "otlp_spans": self.otlp_spans,
            "otlp_requests": self.otlp_requests,
            "otlp_wire_bytes": self.otlp_wire_bytes,
            "otlp_raw_bytes": self.otlp_raw_bytes,
            "otlp_last_ns": self.otlp_last_ns,
        }
        if latencies:
            out["latencies_ns"] = self.latencies_ns
        return out


class Ledger:
    """The sink's ``Tally`` behind a lock, shared by its handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tally = Tally()

    def reset(self) -> None:
        with self.lock:
            self.tally = Tally()

    def record_events(
        self, events: list[Any], wire: int, raw: int, gzipped: bool, received_ns: int
    ) -> tuple[int, int]:
        """Count a tracerelay request's events; returns (new, repeated)."""
        new = repeated = 0
        with self.lock:
            tally = self.tally
            tally.requests += 1
            tally.gzip_requests += gzipped
            tally.wire_bytes += wire
            tally.raw_bytes += raw
            for event in events:
                if not isinstance(event, dict):
                    continue
                event_id = str(event.get("event_id"))
                seen = tally.ids.get(event_id, 0)
                tally.ids[event_id] = seen + 1
                tally.deliveries += 1
                if seen:
                    repeated += 1
                    continue
                new += 1
                payload = event.get("payload")
                end = payload.get("end_time_unix_nano") if isinstance(payload, dict) else None
                if isinstance(end, int):
                    tally.spans += 1
                    tally.latencies_ns.append(received_ns - end)
            if new:
                tally.last_ns = received_ns
        return new, repeated

    def record_otlp(self, spans: int, wire: int, raw: int, received_ns: int) -> None:
        with self.lock:
            tally = self.tally
            tally.otlp_requests += 1
            tally.otlp_spans += spans
            tally.otlp_wire_bytes += wire
            tally.otlp_raw_bytes += raw
            if spans:
                tally.otlp_last_ns = received_ns

    def summary(self, *, latencies: bool) -> dict[str, Any]:
        with self.lock:
            return self.tally.summary(latencies=latencies)


class SinkServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` holding the ledger its handlers write to."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__((HOST, 0), SinkHandler)
        self.ledger = Ledger()


def _decode(body: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


class SinkHandler(BaseHTTPRequestHandler):
    """Counts what arrives and answers 200 at once; keep-alive (HTTP/1.1)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as real servers do: no 40 ms delayed-ACK stalls

    def log_message(self, format: str, *args: Any) -> None:
        return None

    @property
    def ledger(self) -> Ledger:
        return cast(SinkServer, self.server).ledger

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(200, b'{"status":"ok"}')
        elif self.path.startswith("/bench/stats"):
            summary = self.ledger.summary(latencies="latencies" in self.path)
            self._reply(200, orjson.dumps(summary))
        else:
            self._reply(404, b'{"error":"not found"}')

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length")
        if length is None:
            self._reply(411, b'{"error":"Content-Length required"}')
            return
        body = self.rfile.read(int(length))
        received_ns = time.time_ns()
        encoding = self.headers.get("Content-Encoding")
        try:
            if self.path == BATCH_PATH:
                raw = _decode(body, encoding)
                events = orjson.loads(raw).get("events") or []
                new, repeated = self.ledger.record_events(
                    events, len(body), len(raw), encoding == "gzip", received_ns
                )
                answer = {
                    "processed_events": new,
                    "duplicate_events": repeated,
                    "failed_events": 0,
                    "errors": [],
                }
                self._reply(200, orjson.dumps(answer))
            elif self.path == STREAM_PATH:
                raw = _decode(body, encoding)
                event = orjson.loads(raw).get("event")
                new, _ = self.ledger.record_events(
                    [event], len(body), len(raw), encoding == "gzip", received_ns
                )
                status = "processed" if new else "duplicate"
                event_id = event.get("event_id") if isinstance(event, dict) else None
                self._reply(200, orjson.dumps({"event_id": event_id, "status": status}))
            elif self.path == OTLP_PATH:
                from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

                raw = _decode(body, encoding)
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(raw)
                spans = sum(
                    len(scope.spans)
                    for resource in request.resource_spans
                    for scope in resource.scope_spans
                )
                self.ledger.record_otlp(spans, len(body), len(raw), received_ns)
                response = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self._reply(200, response, "application/x-protobuf")
            elif self.path == "/bench/reset":
                self.ledger.reset()
                self._reply(200, b"{}")
            else:
                self._reply(404, b'{"error":"not found"}')
        except Exception as exc:
            self._reply(400, orjson.dumps({"error": repr(exc)}))


def run_sink() -> None:
    """The child process: serve until the parent closes our stdin (or dies)."""
    server = SinkServer()

    def stop_at_eof() -> None:
        sys.stdin.buffer.read()  # returns when the parent closes the pipe or exits
        server.shutdown()

    threading.Thread(target=stop_at_eof, daemon=True).start()
    print(server.server_port, flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


# -- the sink, from the benchmark's side --------------------------------------------------


class Sink:
    """Starts the sink process and reads its counters; ``close()`` ends it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--sink"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], SINK_START_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError("the sink process did not start")
        self.url = f"http://{HOST}:{int(line)}"
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, path: str, method: str = "GET") -> dict[str, Any]:
        data = b"" if method == "POST" else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with self._opener.open(request, timeout=30) as response:
            return cast(dict[str, Any], orjson.loads(response.read()))

    def stats(self, *, latencies: bool = False) -> dict[str, Any]:
        return self._call("/bench/stats?latencies" if latencies else "/bench/stats")

    def reset(self) -> None:
        self._call("/bench/reset", "POST")

    def wait_for(
        self, key: str, expected: int, timeout: float, *, latencies: bool = False
    ) -> dict[str, Any]:
        """Counters once ``key`` reaches ``expected``, stops moving for SETTLE_S, or timeout."""
        deadline = time.monotonic() + timeout
        stats = self.stats()
        seen, changed_at = stats[key], time.monotonic()
        while stats[key] < expected:
            now = time.monotonic()
            if now > deadline or now - changed_at > SETTLE_S:
                break
            time.sleep(0.02)
            stats = self.stats()
            if stats[key] != seen:
                seen, changed_at = stats[key], time.monotonic()
        return self.stats(latencies=True) if latencies else stats

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- helpers --------------------------------------------------------------------------


@contextmanager
def spool_dir() -> Iterator[str]:
    """A fresh spool directory, removed afterwards."""
    path = tempfile.mkdtemp(prefix="tracerelay-bench-spool-")
    _LIVE_DIRS.add(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        _LIVE_DIRS.discard(path)


class MockProcess:
    """``tracerelay mock`` run as a child process; ``stop()`` ends it."""

    def __init__(self, *options: str) -> None:
        command = "from tracerelay.cli import main; raise SystemExit(main())"
        argv = [sys.executable, "-c", command, "mock", "--host", HOST, "--port", "0"]
        self.proc = subprocess.Popen(
            [*argv, *options, "--duration", str(MOCK_MAX_SECONDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], SINK_START_TIMEOUT_S)
        line = self.proc.stdout.readline().decode() if ready else ""
        if "listening on " not in line:
            self.stop()
            raise RuntimeError(f"tracerelay mock did not start: {line!r}")
        self.url = line.rsplit("listening on ", 1)[1].strip()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, path: str, method: str = "GET") -> dict[str, Any]:
        data = b"" if method == "POST" else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with self._opener.open(request, timeout=30) as response:
            return cast(dict[str, Any], orjson.loads(response.read() or b"{}"))

    def reset(self) -> None:
        self._call("/mock/reset", "POST")

    def events_received(self) -> int:
        return int(self._call("/mock/stats")["events_received"])

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: connections are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_watchdog(
    limit: float, sinks: list[Sink], mocks: list[MockServer | MockProcess]
) -> threading.Event:
    """Ends the run after ``limit`` seconds, cleaning up first; set the event to disarm.

    ``sinks`` and ``mocks`` are read when the limit passes: add to them as they start.
    """
    done = threading.Event()

    def watch() -> None:
        if done.wait(limit):
            return
        print(f"bench/delivery.py: over the {limit:g} s time limit; stopping", file=sys.stderr)
        for mock in mocks:
            mock.stop(1.0)
        for sink in sinks:
            sink.close()
        for path in list(_LIVE_DIRS):
            shutil.rmtree(path, ignore_errors=True)
        os._exit(3)

    threading.Thread(target=watch, name="bench-watchdog", daemon=True).start()
    return done


@tracerelay.trace
def traced_work(x: int) -> int:
    tracerelay.set_attribute("rows", x)
    tracerelay.set_attribute("table", "orders")
    return x


def traced_loop(n: int) -> None:
    for i in range(n):
        traced_work(i)


def bare_work(x: int) -> int:
    a = ("rows", x)
    b = ("table", "orders")
    return len(a) + len(b)


def bare_loop(n: int) -> None:
    for i in range(n):
        bare_work(i)


def per_span_ns(
    loop: Callable[[int], None], n: int, repeats: int
) -> tuple[list[float], list[float]]:
    """(calling-thread CPU, wall) per iteration of ``loop(n)``, for each of ``repeats`` runs."""
    callers, walls = [], []
    for _ in range(repeats):
        gc.collect()
        thread0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        loop(n)
        thread1, t1 = time.thread_time_ns(), time.perf_counter_ns()
        callers.append((thread1 - thread0) / n)
        walls.append((t1 - t0) / n)
    return callers, walls


def init_http(endpoint: str, spool: str, **options: Any) -> tracerelay.Client:
    return tracerelay.init(
        service=SERVICE,
        exporter="http",
        endpoint=endpoint,
        spool_dir=spool,
        environ={},
        **options,
    )


@dataclass
class Delivery:
    """tracerelay's delivery counters, read from ``client.metrics()``."""

    delivered: int
    spooled: int
    dropped: int  # lost by the pipeline or by delivery
    circuit: str
    reasons: dict[str, int]  # dropped, by reason (``queue_full``: the pipeline's queue)

    @classmethod
    def of(cls, client: tracerelay.Client) -> Delivery:
        metrics = client.metrics()
        reasons = {str(k): int(v) for k, v in dict(metrics.get("dropped_by_reason", {})).items()}
        nested = metrics.get("delivery")
        if isinstance(nested, dict):  # the exporter's counters under their own key
            return cls(
                int(nested.get("items_delivered", 0)),
                int(nested.get("items_spooled", 0)),
                int(metrics.get("items_dropped", 0)) + int(nested.get("items_dropped", 0)),
                str(nested.get("circuit_state", "?")),
                reasons,
            )
        # SPEC §3 flat form: items_processed counts what reached the server, and
        # items_dropped already includes delivery's drops.
        return cls(
            int(metrics.get("items_processed", 0)),
            int(metrics.get("items_spooled", 0)),
            int(metrics.get("items_dropped", 0)),
            str(metrics.get("circuit_state", "?")),
            reasons,
        )


def describe_reasons(reasons: list[dict[str, int]]) -> str:
    """Drop counts by reason, summed: ``queue_full 6,600, shutdown 12``."""
    total: dict[str, int] = {}
    for part in reasons:
        for reason, count in part.items():
            total[reason] = total.get(reason, 0) + count
    return ", ".join(f"{reason} {count:,}" for reason, count in sorted(total.items()) if count)


# -- (a) caller-side cost ---------------------------------------------------------------


@dataclass
class CallerRun:
    """One case of (a), one pass: a fresh client and spool, measured, then shut down."""

    callers_ns: list[float]  # calling-thread CPU per span, per repeat (absolute)
    walls_ns: list[float]  # wall time per span of the loop, per repeat (absolute)
    produced: int
    delivery: Delivery
    received: int | None  # distinct events the mock server got; None when there is none
    shutdown_s: float


@dataclass
class CallerCase:
    """Every pass of one case of (a)."""

    name: str
    runs: list[CallerRun] = field(default_factory=list)

    def caller_ns(self, bare: float) -> float:
        return statistics.median(c for r in self.runs for c in r.callers_ns) - bare

    def wall_ns(self, bare: float) -> float:
        return statistics.median(w for r in self.runs for w in r.walls_ns) - bare


def caller_run(
    name: str, endpoint: str, mock: MockProcess | None, n: int, repeats: int
) -> CallerRun:
    if mock is not None:
        mock.reset()
    with spool_dir() as spool:
        client = init_http(endpoint, spool)
        try:
            traced_loop(WARMUP_SPANS)
            callers, walls = per_span_ns(traced_loop, n, repeats)
        finally:
            started = time.perf_counter()
            tracerelay.shutdown(timeout=SHUTDOWN_S[name])
            shutdown_s = time.perf_counter() - started
        delivery = Delivery.of(client)
    received = mock.events_received() if mock is not None else None
    return CallerRun(callers, walls, WARMUP_SPANS + n * repeats, delivery, received, shutdown_s)


def caller_cases(
    n: int, repeats: int, passes: int, mocks: list[MockServer | MockProcess]
) -> tuple[float, list[CallerCase]]:
    """Each case once per pass, odd passes in reverse order, so a drift of the machine's
    speed during the run weighs on every case alike."""
    bare_loop(WARMUP_SPANS)
    bares: list[float] = []
    healthy = MockProcess("--seed", "1")
    mocks.append(healthy)
    slow = MockProcess("--rate-slow", "1", "--slow-seconds", "1", "--seed", "1")
    mocks.append(slow)
    down = f"http://{HOST}:{closed_port()}"
    mock_of: dict[str, MockProcess | None] = {HEALTHY: healthy, SLOW: slow, DOWN: None}
    cases = {name: CallerCase(name) for name in mock_of}
    for p in range(passes):
        bares.extend(per_span_ns(bare_loop, n, repeats)[0])
        for name in list(mock_of) if p % 2 == 0 else list(mock_of)[::-1]:
            mock = mock_of[name]
            url = down if mock is None else mock.url
            cases[name].runs.append(caller_run(name, url, mock, n, repeats))
    for mock in (healthy, slow):
        mock.stop()
        mocks.remove(mock)
    return statistics.median(bares), list(cases.values())


def print_caller_cases(
    bare: float, cases: list[CallerCase], n: int, repeats: int, passes: int
) -> float:
    print(
        f"(a) caller-side cost per span, {n:,} spans × {repeats} repeats per case and pass, "
        f"{passes} passes (median of all)"
    )
    print(f"    bare call: {bare:.0f} ns per iteration (absolute); figures below are over it")
    print(
        f"    {'server':<20}{'caller µs':>10}{'per pass':>17}{'wall µs':>9}{'made':>9}"
        f"{'delivered':>11}{'at server':>11}{'spooled':>9}{'dropped':>9}{'breaker':>13}"
        f"{'shutdown (deadline)':>21}"
    )
    for case in cases:
        runs = case.runs
        per_pass = " / ".join(
            f"{statistics.median(r.callers_ns) / 1000 - bare / 1000:.2f}" for r in runs
        )
        received = "-" if runs[0].received is None else f"{sum(r.received or 0 for r in runs):,}"
        breaker = "/".join(dict.fromkeys(r.delivery.circuit for r in runs))
        slowest = max(r.shutdown_s for r in runs)
        print(
            f"    {case.name:<20}{case.caller_ns(bare) / 1000:>10.2f}{per_pass:>17}"
            f"{case.wall_ns(bare) / 1000:>9.2f}{sum(r.produced for r in runs):>9,}"
            f"{sum(r.delivery.delivered for r in runs):>11,}{received:>11}"
            f"{sum(r.delivery.spooled for r in runs):>9,}"
            f"{sum(r.delivery.dropped for r in runs):>9,}{breaker:>13}"
            f"{f'{slowest:.1f} s ({SHUTDOWN_S[case.name]:g} s)':>21}"
        )
    for case in cases:
        reasons = describe_reasons([r.delivery.reasons for r in case.runs])
        if reasons:
            print(f"    {case.name}: dropped by reason: {reasons}")
    costs = [c.caller_ns(bare) for c in cases]
    spread = (max(costs) - min(costs)) / min(costs)
    print(
        f"    spread of the caller cost: {spread * 100:.1f} % "
        f"((max − min) / min; target ≤ {TARGET_SPREAD * 100:.0f} %)"
    )
    print(
        "    made/delivered/at server/spooled/dropped: totals over the passes, from "
        "client.metrics() after each shutdown; shutdown: the slowest pass"
    )
    print()
    return spread


# -- (b) and (c) throughput and bytes -----------------------------------------------------


@dataclass
class Throughput:
    sdk: str
    n: int
    received: int  # distinct spans the sink got
    duplicates: int
    elapsed_s: float  # first span → the sink received the last one
    produce_s: float  # the producing loop alone
    caller_ns: float  # calling-thread CPU per span during the loop
    background_ns: float  # the rest of the process's CPU per span, until the flush returned
    dropped: int  # what the SDK lost (tracerelay: its counters; OpenTelemetry: N − received)
    spooled: int
    flushed: bool
    requests: int
    gzip_requests: int
    wire_bytes: int
    raw_bytes: int
    reasons: dict[str, int] = field(default_factory=dict)  # tracerelay's drops by reason

    @property
    def spans_per_s(self) -> float:
        return self.received / self.elapsed_s if self.elapsed_s > 0 else 0.0


def tracerelay_throughput(sink: Sink, n: int) -> Throughput:
    with spool_dir() as spool:
        client = init_http(sink.url, spool)
        try:
            traced_loop(THROUGHPUT_WARMUP)
            tracerelay.flush(timeout=FLUSH_TIMEOUT_S)
            sink.reset()
            gc.collect()
            cpu0, thread0 = time.process_time_ns(), time.thread_time_ns()
            wall0, t0 = time.time_ns(), time.perf_counter_ns()
            traced_loop(n)
            thread1, t1 = time.thread_time_ns(), time.perf_counter_ns()
            flushed = tracerelay.flush(timeout=FLUSH_TIMEOUT_S)
            cpu1 = time.process_time_ns()
            stats = sink.wait_for("spans", n, timeout=FLUSH_TIMEOUT_S)
        finally:
            tracerelay.shutdown(timeout=5.0)
        delivery = Delivery.of(client)
    caller = thread1 - thread0
    last = stats["last_ns"] or time.time_ns()
    return Throughput(
        "tracerelay",
        n,
        stats["spans"],
        stats["duplicates"],
        (last - wall0) / 1e9,
        (t1 - t0) / 1e9,
        caller / n,
        (cpu1 - cpu0 - caller) / n,
        delivery.dropped,
        delivery.spooled,
        flushed,
        stats["requests"],
        stats["gzip_requests"],
        stats["wire_bytes"],
        stats["raw_bytes"],
        delivery.reasons,
    )


def otel_throughput(sink: Sink, n: int) -> Throughput:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=sink.url + OTLP_PATH)))
    tracer = provider.get_tracer("bench")

    def work(x: int) -> int:
        with tracer.start_as_current_span("work") as span:
            span.set_attribute("rows", x)
            span.set_attribute("table", "orders")
            return x

    def loop(k: int) -> None:
        for i in range(k):
            work(i)

    try:
        loop(OTEL_WARMUP)
        provider.force_flush(timeout_millis=int(FLUSH_TIMEOUT_S * 1000))
        sink.reset()
        gc.collect()
        cpu0, thread0 = time.process_time_ns(), time.thread_time_ns()
        wall0, t0 = time.time_ns(), time.perf_counter_ns()
        loop(n)
        thread1, t1 = time.thread_time_ns(), time.perf_counter_ns()
        flushed = bool(provider.force_flush(timeout_millis=int(FLUSH_TIMEOUT_S * 1000)))
        cpu1 = time.process_time_ns()
        stats = sink.wait_for("otlp_spans", n, timeout=FLUSH_TIMEOUT_S)
    finally:
        provider.shutdown()
    caller = thread1 - thread0
    last = stats["otlp_last_ns"] or time.time_ns()
    return Throughput(
        "OpenTelemetry",
        n,
        stats["otlp_spans"],
        0,
        (last - wall0) / 1e9,
        (t1 - t0) / 1e9,
        caller / n,
        (cpu1 - cpu0 - caller) / n,
        n - stats["otlp_spans"],
        0,
        flushed,
        stats["otlp_requests"],
        0,
        stats["otlp_wire_bytes"],
        stats["otlp_raw_bytes"],
    )


def throughput_rounds(sink: Sink, n: int, rounds: int) -> list[Throughput]:
    print(f"(b) end-to-end throughput, {n:,} flat spans per run, {rounds} rounds, into one sink")
    print(
        f"    {'round':<7}{'sdk':<15}{'spans/s':>10}{'made/s':>10}{'elapsed':>9}"
        f"{'caller µs':>11}{'bg µs':>8}{'received':>10}{'dropped':>9}{'spooled':>9}"
        f"{'dup':>6}{'flushed':>9}"
    )
    results: list[Throughput] = []
    for r in range(rounds):
        order = (tracerelay_throughput, otel_throughput)
        for run in order if r % 2 == 0 else order[::-1]:
            result = run(sink, n)
            results.append(result)
            print(
                f"    {r + 1:<7}{result.sdk:<15}{result.spans_per_s:>10,.0f}"
                f"{result.n / result.produce_s:>10,.0f}{result.elapsed_s:>8.2f}s"
                f"{result.caller_ns / 1000:>11.2f}{result.background_ns / 1000:>8.2f}"
                f"{result.received:>10,}{result.dropped:>9,}{result.spooled:>9,}"
                f"{result.duplicates:>6,}{'yes' if result.flushed else 'NO':>9}",
                flush=True,
            )
    print(
        "    spans/s: spans received ÷ (last receipt − first span); made/s: the loop alone;"
        " bg µs: process CPU − caller CPU, per span"
    )
    return results


def median_of(results: list[Throughput], sdk: str, key: Callable[[Throughput], float]) -> float:
    return statistics.median(key(r) for r in results if r.sdk == sdk)


def print_throughput_summary(results: list[Throughput]) -> dict[str, float]:
    ours = median_of(results, "tracerelay", lambda r: r.spans_per_s)
    theirs = median_of(results, "OpenTelemetry", lambda r: r.spans_per_s)
    background = median_of(results, "tracerelay", lambda r: r.background_ns) / 1000
    otel_background = median_of(results, "OpenTelemetry", lambda r: r.background_ns) / 1000
    tr_dropped = sum(r.dropped for r in results if r.sdk == "tracerelay")
    tr_missing = sum(r.n - r.received for r in results if r.sdk == "tracerelay")
    otel_dropped = sum(r.dropped for r in results if r.sdk == "OpenTelemetry")
    total = sum(r.n for r in results if r.sdk == "tracerelay")
    ratio = ours / theirs if theirs else float("inf")
    print(
        f"    median spans/s: tracerelay {ours:,.0f}, OpenTelemetry {theirs:,.0f}: "
        f"{ratio:.1f}× (target ≥ {TARGET_RATIO:g}×)"
    )
    print(
        f"    background CPU per span (median): tracerelay {background:.2f} µs "
        f"(target ≤ {TARGET_BACKGROUND_US:g} µs), OpenTelemetry {otel_background:.2f} µs"
    )
    reasons = describe_reasons([r.reasons for r in results if r.sdk == "tracerelay"])
    print(
        f"    dropped over all rounds: tracerelay {tr_dropped:,} by its counters"
        f"{f' ({reasons})' if reasons else ''}, {tr_missing:,} missing at the sink; "
        f"OpenTelemetry {otel_dropped:,} ({otel_dropped / total * 100:.1f} % of {total:,})"
    )
    print()
    return {
        "ratio": ratio,
        "ours": ours,
        "theirs": theirs,
        "background_us": background,
        "tr_dropped": max(tr_dropped, tr_missing),
        "otel_dropped": otel_dropped,
        "total": total,
    }


def print_bytes(results: list[Throughput]) -> float:
    ours = [r for r in results if r.sdk == "tracerelay"]
    theirs = [r for r in results if r.sdk == "OpenTelemetry"]
    spans = sum(r.received for r in ours) or 1
    raw, wire = sum(r.raw_bytes for r in ours), sum(r.wire_bytes for r in ours)
    requests, gzipped = sum(r.requests for r in ours), sum(r.gzip_requests for r in ours)
    otlp_spans = sum(r.received for r in theirs) or 1
    otlp_wire, otlp_raw = sum(r.wire_bytes for r in theirs), sum(r.raw_bytes for r in theirs)
    otlp_requests = sum(r.requests for r in theirs)
    ratio = raw / wire if wire else 0.0
    print("(c) bytes per span, from the sink's view of (b)")
    print(
        f"    tracerelay raw JSON {raw / spans:,.0f} B, on the wire {wire / spans:,.0f} B: "
        f"compression {ratio:.1f}× (target ≥ {TARGET_COMPRESSION:g}×); "
        f"{gzipped:,} of {requests:,} requests gzip, {spans / max(requests, 1):,.0f} spans each"
    )
    print(
        f"    OpenTelemetry OTLP protobuf on the wire {otlp_wire / otlp_spans:,.0f} B "
        f"(decoded {otlp_raw / otlp_spans:,.0f} B); {otlp_requests:,} requests, "
        f"{otlp_spans / max(otlp_requests, 1):,.0f} spans each"
    )
    print()
    return ratio


# -- (d) instant mode latency ---------------------------------------------------------


def instant_latency(sink: Sink, spans: int, seconds: float) -> dict[str, Any]:
    with spool_dir() as spool:
        client = init_http(sink.url, spool, mode="instant")
        try:
            for i in range(20):
                traced_work(i)
                time.sleep(0.002)
            tracerelay.flush(timeout=FLUSH_TIMEOUT_S)
            sink.reset()
            interval = seconds / spans
            start = time.perf_counter()
            for i in range(spans):
                traced_work(i)
                delay = start + (i + 1) * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            produce_s = time.perf_counter() - start
            flushed = tracerelay.flush(timeout=FLUSH_TIMEOUT_S)
            stats = sink.wait_for("spans", spans, timeout=FLUSH_TIMEOUT_S, latencies=True)
        finally:
            tracerelay.shutdown(timeout=5.0)
        delivery = Delivery.of(client)
    latencies = sorted(stats["latencies_ns"])
    ms = [v / 1e6 for v in latencies] or [0.0]
    p99 = statistics.quantiles(ms, n=100)[98] if len(ms) > 1 else ms[0]
    result = {
        "p50": statistics.median(ms),
        "p99": p99,
        "max": ms[-1],
        "received": stats["spans"],
        "requests": stats["requests"],
        "dropped": delivery.dropped,
    }
    print(f"(d) instant mode: {spans:,} spans over {produce_s:.1f} s, latency span end → sink")
    print(
        f"    p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms, max {result['max']:.2f} ms; "
        f"{stats['spans']:,} received in {stats['requests']:,} requests "
        f"({stats['spans'] / max(stats['requests'], 1):.2f} spans each); "
        f"dropped {result['dropped']:,}; flushed {'yes' if flushed else 'NO'}"
    )
    print()
    return result


# -- (e) a slow server: adaptive concurrency against one request in flight ------------------


@dataclass
class SlowRun:
    latency: float
    adaptive: bool
    n: int
    elapsed_s: float
    cpu_ns: float  # process CPU per span, first span → flush returned
    at_server: int  # most requests the server held at once
    limit: int  # in_flight_limit after the flush
    delivered: int
    flushed: bool

    @property
    def spans_per_s(self) -> float:
        return self.n / self.elapsed_s if self.elapsed_s > 0 else 0.0


def slow_server_run(mocks: list[MockServer], latency: float, n: int, adaptive: bool) -> SlowRun:
    server = MockServer(host=HOST, faults=Faults(latency=latency), seed=1)
    mocks.append(server)
    with server, spool_dir() as spool:
        options = {} if adaptive else {"connection_pool_size": 1}
        client = init_http(server.url, spool, **options)
        try:
            traced_loop(20)
            tracerelay.flush(timeout=FLUSH_TIMEOUT_S)
            server.reset()
            gc.collect()
            cpu0, t0 = time.process_time_ns(), time.perf_counter_ns()
            traced_loop(n)
            flushed = tracerelay.flush(timeout=FLUSH_TIMEOUT_S)
            cpu1, t1 = time.process_time_ns(), time.perf_counter_ns()
            metrics = client.metrics()
        finally:
            tracerelay.shutdown(timeout=5.0)
        stats = server.stats()
    mocks.remove(server)
    return SlowRun(
        latency,
        adaptive,
        n,
        (t1 - t0) / 1e9,
        (cpu1 - cpu0) / n,
        stats["concurrent_requests_max"],
        int(metrics["in_flight_limit"]),
        stats["events_received"],
        flushed,
    )


def slow_server_cases(
    mocks: list[MockServer], latencies: list[float], n: int
) -> dict[float, float]:
    """Each latency with adaptive concurrency, then with one request in flight; returns
    the speed-up per latency."""
    print(
        f"(e) a slow server (every answer after the latency), {n:,} spans made in a loop, "
        "then a flush"
    )
    print(
        f"    {'latency':<9}{'in flight':<16}{'spans/s':>9}{'elapsed':>9}{'at server':>11}"
        f"{'limit':>7}{'CPU µs/span':>13}{'delivered':>11}{'flushed':>9}"
    )
    speedups: dict[float, float] = {}
    for latency in latencies:
        runs = [slow_server_run(mocks, latency, n, adaptive) for adaptive in (True, False)]
        for run in runs:
            mode = "adaptive (≤10)" if run.adaptive else "one (pool 1)"
            print(
                f"    {f'{latency:g} s':<9}{mode:<16}{run.spans_per_s:>9,.0f}"
                f"{run.elapsed_s:>8.2f}s{run.at_server:>11}{run.limit:>7}"
                f"{run.cpu_ns / 1000:>13.2f}{run.delivered:>11,}"
                f"{'yes' if run.flushed else 'NO':>9}",
                flush=True,
            )
        speedups[latency] = runs[0].spans_per_s / max(runs[1].spans_per_s, 1e-9)
    summary = ", ".join(f"{speedup:.1f}× at {latency:g} s" for latency, speedup in speedups.items())
    print(f"    adaptive ÷ one request in flight: {summary}")
    print()
    return speedups


# -- main -----------------------------------------------------------------------------


def print_summary(
    spread: float,
    throughput: dict[str, float],
    compression: float,
    instant: dict[str, Any],
    slow: dict[float, float],
) -> None:
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    rows = [
        (
            "(a) caller cost, healthy/slow/down spread",
            f"{spread * 100:.1f} %",
            f"≤ {TARGET_SPREAD * 100:.0f} %",
            verdict(spread <= TARGET_SPREAD),
        ),
        (
            "(b) spans/s, tracerelay ÷ OpenTelemetry",
            f"{throughput['ratio']:.1f}× ({throughput['ours']:,.0f} / {throughput['theirs']:,.0f})",
            f"≥ {TARGET_RATIO:g}×",
            verdict(throughput["ratio"] >= TARGET_RATIO),
        ),
        (
            "(b) background CPU per span, tracerelay",
            f"{throughput['background_us']:.2f} µs",
            f"≤ {TARGET_BACKGROUND_US:g} µs",
            verdict(throughput["background_us"] <= TARGET_BACKGROUND_US),
        ),
        (
            "(b) dropped, tracerelay (OpenTelemetry)",
            f"{throughput['tr_dropped']:,.0f} ({throughput['otel_dropped']:,.0f} of "
            f"{throughput['total']:,.0f})",
            "0",
            verdict(throughput["tr_dropped"] == 0),
        ),
        (
            "(c) compression ratio, tracerelay",
            f"{compression:.1f}×",
            f"≥ {TARGET_COMPRESSION:g}×",
            verdict(compression >= TARGET_COMPRESSION),
        ),
        (
            "(d) instant latency p50 / p99",
            f"{instant['p50']:.2f} / {instant['p99']:.2f} ms",
            "reported",
            "",
        ),
        *(
            (
                f"(e) spans/s, {latency:g} s server, adaptive ÷ one",
                f"{speedup:.1f}×",
                "reported",
                "",
            )
            for latency, speedup in slow.items()
        ),
    ]
    print("summary")
    print(f"    {'measure':<44}{'measured':<28}{'target':<11}")
    for name, measured, target, note in rows:
        print(f"    {name:<44}{measured:<28}{target:<11}{note}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--caller-spans", type=int, default=20_000, help="(a) spans per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="(a) repeats per case and pass")
    parser.add_argument("--passes", type=int, default=2, help="(a) passes over the three cases")
    parser.add_argument("--spans", type=int, default=50_000, help="(b) spans per run")
    parser.add_argument("--rounds", type=int, default=3, help="(b) runs of each SDK")
    parser.add_argument("--instant-spans", type=int, default=2_000, help="(d) spans")
    parser.add_argument("--instant-seconds", type=float, default=2.0, help="(d) over how long")
    parser.add_argument("--slow-spans", type=int, default=5_000, help="(e) spans per run")
    parser.add_argument(
        "--slow-latencies",
        default="0.2,1",
        help="(e) the slow server's answer times, seconds, comma-separated",
    )
    parser.add_argument(
        "--time-limit", type=float, default=600.0, help="stop the whole run after this (s)"
    )
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name in (
        "caller_spans",
        "repeats",
        "passes",
        "spans",
        "rounds",
        "instant_spans",
        "slow_spans",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        args.slow_latencies = [float(v) for v in args.slow_latencies.split(",") if v.strip()]
    except ValueError:
        parser.error("--slow-latencies takes seconds separated by commas, e.g. 0.2,1")
    if not all(0 < v <= 10 for v in args.slow_latencies):
        parser.error("--slow-latencies must be between 0 and 10 seconds each")
    if args.instant_seconds <= 0 or args.time_limit <= 0:
        parser.error("--instant-seconds and --time-limit must be positive")
    return args


def isolate_environment() -> None:
    """OpenTelemetry runs with its defaults and nothing goes through a proxy."""
    for name in list(os.environ):
        if name.startswith(("OTEL_BSP_", "OTEL_EXPORTER_OTLP_")):
            print(f"note: ignoring {name} (defaults are measured)")
            del os.environ[name]
    for name in ("NO_PROXY", "no_proxy"):
        hosts = os.environ.get(name, "")
        os.environ[name] = f"{hosts},{HOST}" if hosts else HOST
    # OpenTelemetry logs each dropped batch; the drops are counted and printed instead.
    logging.getLogger("opentelemetry.sdk._shared_internal").setLevel(logging.ERROR)


def main() -> None:
    args = parse_args()
    if args.sink:
        run_sink()
        return
    isolate_environment()
    started = time.perf_counter()
    otel = importlib.metadata.version("opentelemetry-exporter-otlp-proto-http")
    print(
        f"bench/delivery.py: tracerelay {tracerelay.__version__}, "
        f"opentelemetry-exporter-otlp-proto-http {otel}, python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs"
    )
    print()
    mocks: list[MockServer | MockProcess] = []
    sinks: list[Sink] = []
    done = start_watchdog(args.time_limit, sinks, mocks)
    try:
        bare, cases = caller_cases(args.caller_spans, args.repeats, args.passes, mocks)
        spread = print_caller_cases(bare, cases, args.caller_spans, args.repeats, args.passes)
        sink = Sink()
        sinks.append(sink)
        results = throughput_rounds(sink, args.spans, args.rounds)
        throughput = print_throughput_summary(results)
        compression = print_bytes(results)
        instant = instant_latency(sink, args.instant_spans, args.instant_seconds)
        slow = slow_server_cases(mocks, args.slow_latencies, args.slow_spans)
        print_summary(spread, throughput, compression, instant, slow)
        print(f"(whole run: {time.perf_counter() - started:.0f} s)")
    finally:
        done.set()
        for mock in mocks:
            mock.stop()
        for sink in sinks:
            sink.close()


if __name__ == "__main__":
    main()
