"""Memory under overload: N spans made while the server is down, then delivered when it returns.

Issue 3's memory bar: 1,000,000 spans produced while the server is down, with
the spool: RSS growth ≤ 50 MB, and every span delivered after the server
returns. One run:

1. ``tracerelay.init(exporter="http")`` (defaults, a fresh spool directory)
   points at a closed port on 127.0.0.1.
2. A traced function setting two attributes runs N times in a tight loop: as
   fast as Python makes spans, far faster than the pipeline can process them,
   with nothing able to leave. A sampler thread reads this process's RSS
   (``/proc/self/statm``) every 10 ms; the figure is the peak minus the RSS just
   before the loop (after ``init``, so imports and the client are excluded).
3. Once everything is on disk (the spool, and the overflow file for records not
   yet processed), ``tracerelay mock`` starts on that port as its own process,
   and ``tracerelay.flush()`` waits until the spool is empty. The mock's
   ``/mock/stats`` says how many distinct event ids arrived and how many
   twice.

Printed: the caller's CPU per span, how long until all was on disk, the RSS
peak, what the SDK counted (spooled, parked in the overflow file, dropped),
the spool's size on disk, the delivery time, and distinct/duplicate ids at the
mock. The bar is printed beside the figures, not asserted. Everything binds
127.0.0.1; the mock process and the spool directory are removed at the end,
and ``--time-limit`` bounds the run. Run: ``python bench/memory.py [--spans N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

import tracerelay

HOST = "127.0.0.1"
BAR_MB = 50.0


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class PeakSampler(threading.Thread):
    """Samples RSS every 10 ms until stopped; ``peak`` is the highest seen."""

    def __init__(self) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.peak = rss_mb()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.01):
            self.peak = max(self.peak, rss_mb())


@tracerelay.trace
def work(i: int) -> int:
    tracerelay.set_attribute("i", i)
    tracerelay.set_attribute("user", "alice")
    return i


def mock_stats(port: int) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{HOST}:{port}/mock/stats", timeout=10) as reply:
        stats: dict[str, Any] = json.load(reply)
        return stats


def wait_for_port(port: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("tracerelay mock did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--time-limit", type=float, default=900.0)
    args = parser.parse_args()
    watchdog = threading.Timer(args.time_limit, lambda: os._exit(3))
    watchdog.daemon = True
    watchdog.start()

    port, spool = free_port(), tempfile.mkdtemp(prefix="tracerelay-bench-memory-")
    mock: subprocess.Popen[bytes] | None = None
    print(
        f"bench/memory.py: tracerelay {tracerelay.__version__}, {args.spans:,} spans, "
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    try:
        client = tracerelay.init(
            service="bench-memory",
            endpoint=f"http://{HOST}:{port}",
            spool_dir=spool,
            environ={},
        )
        sampler = PeakSampler()
        base = rss_mb()
        sampler.start()
        started, cpu = time.perf_counter(), time.thread_time()
        for i in range(args.spans):
            work(i)
        made_in, cpu = time.perf_counter() - started, time.thread_time() - cpu
        while client.metrics()["items_spooled"] + client.metrics()["items_dropped"] < args.spans:
            time.sleep(0.05)
        on_disk_in = time.perf_counter() - started
        metrics = client.metrics()
        spooled_peak = sampler.peak - base
        spool_bytes = sum(
            os.path.getsize(os.path.join(spool, name))
            for name in os.listdir(spool)
            if name.endswith(".batch")
        )
        print(f"  caller CPU per span        {cpu / args.spans * 1e6:8.2f} µs")
        print(
            f"  loop took                  {made_in:8.1f} s; all on disk after {on_disk_in:.1f} s"
        )
        print(
            f"  spooled / dropped          {metrics['items_spooled']:,} / "
            f"{metrics['items_dropped']:,} {metrics['dropped_by_reason'] or ''}"
        )
        print(
            f"  parked unprocessed on disk {client.pipeline.stats().get('overflowed', 0):,} "
            f"(the overflow file, while the pipeline was behind)"
        )
        print(
            f"  spool on disk              {spool_bytes / 1e6:8.1f} MB "
            f"({spool_bytes / args.spans:.0f} bytes per span)"
        )
        print(f"  RSS growth, peak           {spooled_peak:8.1f} MB   (bar: ≤ {BAR_MB:.0f} MB)")

        mock = subprocess.Popen(
            [
                os.path.join(os.path.dirname(sys.executable), "tracerelay"),
                "mock",
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port, 30)
        started = time.perf_counter()
        delivered = tracerelay.flush(timeout=args.time_limit)
        took = time.perf_counter() - started
        stats = mock_stats(port)
        sampler.stopped.set()
        received = stats["events_received"]
        print(
            f"  delivered after return     {received:,} distinct ids in {took:.1f} s "
            f"({received / took:,.0f}/s), {stats['duplicates_received']:,} duplicates, "
            f"flush → {delivered}"
        )
        print(f"  RSS growth, peak overall   {sampler.peak - base:8.1f} MB")
        verdict = "met" if spooled_peak <= BAR_MB and received == args.spans else "NOT met"
        print(f"  bar: RSS ≤ {BAR_MB:.0f} MB and every span delivered: {verdict}")
        tracerelay.shutdown()
    finally:
        if mock is not None:
            mock.terminate()
            mock.wait(10)
        shutil.rmtree(spool, ignore_errors=True)


if __name__ == "__main__":
    main()
