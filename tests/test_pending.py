"""Records an exit could not process: kept raw in the spool, processed at the next start.

What a user notices: spans still queued when the exit deadline passes are not
lost — the next start of the app (or another process of the service) sends
them, once; a damaged or tampered file is skipped with a warning, never run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracerelay
from tests.delivery.support import FAST, spans_received, wait_for_delivery
from tracerelay import _diagnostics
from tracerelay.cli import main
from tracerelay.delivery.spool import Spool
from tracerelay.mock import MockServer
from tracerelay.overflow import FrameReader, Overflow, frames_of
from tracerelay.pending import Pending
from tracerelay.records import Score
from tracerelay.spans import Span
from tracerelay.testing import capture


def _spans(n: int, prefix: str = "s") -> list[Span]:
    with capture() as spans:
        for i in range(n):
            with tracerelay.span(f"{prefix}{i}", attributes={"i": i, "tags": ["a", "b"]}) as span:
                span.add_event("tick", {"n": i})
    return list(spans)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _raw_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.raw"))


def test_spans_the_exit_deadline_cannot_reach_are_sent_by_the_next_start(tmp_path: Path) -> None:
    # The server is down and the exit deadline is too short to process 20,000 spans:
    # what the pipeline has not reached is kept raw, nothing is dropped.
    made = 20_000
    first = tracerelay.init(
        exporter="http",
        endpoint=f"http://127.0.0.1:{_closed_port()}",
        spool_dir=str(tmp_path),
        batch_max_size=1000,
        **FAST,
    )
    for i in range(made):
        with tracerelay.span(f"s{i}"):
            pass
    assert tracerelay.shutdown(timeout=0.05) is False
    metrics = first.metrics()
    assert metrics["items_dropped"] == 0, metrics["dropped_by_reason"]
    assert metrics["items_kept"] > 0
    assert metrics["items_created"] == made
    assert _raw_files(tmp_path)

    # The next start of the app, the server up again: every span arrives, once.
    with MockServer(seed=5) as server:
        second = tracerelay.init(
            exporter="http", endpoint=server.url, spool_dir=str(tmp_path), **FAST
        )
        wait_for_delivery(30)
        names = [p["name"] for p in spans_received(server)]
        assert sorted(names) == sorted(f"s{i}" for i in range(made))
        assert set(server.received.values()) == {1}
        assert second.metrics()["items_created"] == 0  # nothing was made by this run
        tracerelay.shutdown()
    assert not _raw_files(tmp_path)
    assert not list(tmp_path.glob("*.batch"))


def test_a_kept_record_keeps_its_event_id_however_often_it_is_read(tmp_path: Path) -> None:
    spans = _spans(50)
    for span in spans:
        span.event_id = None  # as in the queue: not processed yet
    score = Score(name="accuracy", value=0.5, trace_id=spans[0].trace_id)
    with Spool(tmp_path, max_bytes=1 << 30) as spool:
        kept, lost = Pending(spool).keep([*spans, score], None)
        assert (kept, lost) == (51, 0)
        (entry,) = spool.pending()
        data = spool.read_pending(entry)
    assert data is not None
    once, twice = FrameReader(51, data).take(100), FrameReader(51, data).take(100)
    assert [r.event_id for r in once] == [r.event_id for r in twice]
    assert [r.event_id for r in once] == [s.event_id for s in spans] + [score.event_id]
    assert all(r.event_id for r in once)
    assert [r.name for r in once[:-1]] == [s.name for s in spans]
    assert once[0].events[0]["name"] == "tick"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=4),
    chunk=st.integers(min_value=1, max_value=17),
    parked=st.integers(min_value=0, max_value=20),
)
def test_records_come_back_in_order_whatever_the_chunks(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], chunk: int, parked: int
) -> None:
    # Pending files of several exits, each from parked records (the overflow file) and
    # the queue: read back in chunks of any size, every record once, in order.
    directory = tmp_path_factory.mktemp("pending")
    written: list[str] = []
    with Spool(directory, max_bytes=1 << 30) as spool:
        pending = Pending(spool)
        for n, size in enumerate(sizes):
            overflow = Overflow(str(directory), max_bytes=1 << 26)
            spans = _spans(size + parked, prefix=f"x{n}-")
            assert overflow.park(spans[:parked]) == []
            pending.keep(spans[parked:], overflow)
            overflow.close()
            written += [s.name for s in spans]
        read: list[str] = []
        while batch := pending.take(chunk):
            read += [r.name for r in batch]
        assert pending.take(chunk) == []
        assert read == written
        assert spool.pending() == []
        assert not list(directory.glob("*.raw"))


def test_a_half_read_file_is_kept_again_whole_at_the_next_exit(tmp_path: Path) -> None:
    spans = _spans(30)
    with Spool(tmp_path, max_bytes=1 << 30) as spool:
        pending = Pending(spool)
        pending.keep(spans, None)
        first = pending.take(10)
        assert [r.name for r in first] == [s.name for s in spans[:10]]
        newer = _spans(5, prefix="n")
        assert pending.keep(newer, None) == (25, 0)  # the 20 unread, then the 5 new
        (entry,) = spool.pending()
        assert entry.event_count == 25
        rest = pending.take(100)
    assert [r.name for r in rest] == [s.name for s in spans[10:]] + [s.name for s in newer]


def test_a_frame_naming_anything_but_a_record_type_is_refused_not_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_diagnostics, "_warned", set())  # "once" is per process
    marker = tmp_path / "ran"

    class Hostile:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.mkdir, (str(marker),))

    good, _ = frames_of(_spans(2), 1 << 20)
    evil = pickle.dumps((1, Hostile()), 5)
    frames = good + struct.pack("<I", len(evil)) + evil
    spool_dir = tmp_path / "spool"
    with Spool(spool_dir, max_bytes=1 << 30) as spool:
        assert spool.write_pending(3, frames)
        pending = Pending(spool)
        with caplog.at_level(logging.WARNING, logger="tracerelay"):
            records = pending.take(10)
            assert pending.take(10) == []
    assert [r.name for r in records] == ["s0", "s1"]
    assert pending.unreadable == 1
    assert not marker.exists()
    assert any("could not be read back" in r.getMessage() for r in caplog.records)


def test_a_damaged_pending_file_is_set_aside_and_the_others_still_processed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_diagnostics, "_warned", set())
    with Spool(tmp_path, max_bytes=1 << 30) as spool:
        pending = Pending(spool)
        pending.keep(_spans(5, prefix="a"), None)
        pending.keep(_spans(5, prefix="b"), None)
        damaged = Path(spool.pending()[0].path)
        data = bytearray(damaged.read_bytes())
        data[-3] ^= 0xFF
        damaged.write_bytes(bytes(data))
        with caplog.at_level(logging.WARNING, logger="tracerelay"):
            records = pending.take(100)
    assert [r.name for r in records] == [f"b{i}" for i in range(5)]
    assert len(list((tmp_path / "corrupt").iterdir())) == 1
    assert any("corrupt" in r.getMessage() for r in caplog.records)


def test_a_dead_processs_kept_records_are_adopted_and_sent_once(tmp_path: Path) -> None:
    # Two "processes" of one service: the one that exited left kept records; a live
    # one of the same service (another spool owner) adopts and sends them.
    with Spool(tmp_path, max_bytes=1 << 30) as gone:
        Pending(gone).keep(_spans(40, prefix="gone"), None)
    with MockServer(seed=2) as server:
        tracerelay.init(exporter="http", endpoint=server.url, spool_dir=str(tmp_path), **FAST)
        wait_for_delivery(20)
        names = sorted(p["name"] for p in spans_received(server))
        tracerelay.shutdown()
    assert names == sorted(f"gone{i}" for i in range(40))
    assert set(server.received.values()) == {1}
    assert not _raw_files(tmp_path)


def test_an_async_client_sends_what_an_earlier_exit_kept(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 30) as gone:
        Pending(gone).keep(_spans(30, prefix="kept"), None)

    async def run(url: str) -> bool:
        client = tracerelay.AsyncClient(
            exporter="http", endpoint=url, spool_dir=str(tmp_path), **FAST
        )
        await client.start()
        delivered = await client.flush(timeout=20)
        await client.shutdown()
        return delivered

    with MockServer(seed=4) as server:
        assert asyncio.run(run(server.url))
        names = sorted(p["name"] for p in spans_received(server))
    assert names == sorted(f"kept{i}" for i in range(30))


def test_inspect_shows_kept_records_replay_leaves_them_purge_deletes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Spool(tmp_path, max_bytes=1 << 30) as gone:
        Pending(gone).keep(_spans(12), None)
    assert main(["spool", "inspect", "--dir", str(tmp_path)]) == 0
    assert "12 records kept unprocessed at an exit (1 files)" in capsys.readouterr().out

    with MockServer(seed=1) as server:
        assert main(["spool", "replay", "--dir", str(tmp_path), "--endpoint", server.url]) == 0
        assert server.received == {}  # unprocessed records are the app's to send
    assert "12 records kept unprocessed at an exit are left" in capsys.readouterr().out
    assert len(_raw_files(tmp_path)) == 1

    assert main(["spool", "purge", "--dir", str(tmp_path), "--yes"]) == 0
    assert "purged 12 records kept unprocessed" in capsys.readouterr().out
    assert not _raw_files(tmp_path)
