"""The writer thread: group commits, and waiters that give up never stop it."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
import time
from pathlib import Path

from tracerelay.server.ingest.events import observation_write
from tracerelay.server.storage.merge import version_of
from tracerelay.server.storage.rows import WriteBatch
from tracerelay.server.storage.sqlite import SqliteStore
from tracerelay.server.storage.writer import Writer


def one_span(n: int) -> WriteBatch:
    payload = {"trace_id": f"{n:032x}", "span_id": f"{n:016x}", "name": f"s{n}",
               "start_time_unix_nano": n, "end_time_unix_nano": n + 1}  # fmt: skip
    event_id = f"{n:026d}"
    return WriteBatch("p", [observation_write("p", payload, version_of(1.0, event_id), event_id)])


def test_cancelled_waiters_leave_the_writer_running(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    writer = Writer(store)
    gate = threading.Event()
    try:

        async def scenario() -> None:
            # A maintenance call holds the writer while a request's wait is cancelled
            # (its client went away), and a call's own wait is cancelled too.
            blocked = asyncio.wrap_future(writer.call(gate.wait))
            abandoned = writer.submit(one_span(1))
            abandoned.cancel()
            blocked.cancel()
            await asyncio.sleep(0.05)
            gate.set()
            result = await asyncio.wait_for(writer.submit(one_span(2)), 10)
            assert result.duplicates == set()

        asyncio.run(scenario())
        assert writer._thread.is_alive()
        # The abandoned batch was written all the same: a retry would be a repeat.
        deadline = time.monotonic() + 5
        while store.get_trace("p", f"{1:032x}") is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert store.get_trace("p", f"{2:032x}") is not None
    finally:
        gate.set()
        writer.close()
        store.close()


def test_batches_queued_together_share_one_commit(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    writer = Writer(store)
    gate = threading.Event()
    try:

        async def scenario() -> None:
            held = asyncio.wrap_future(writer.call(gate.wait))
            waits = [writer.submit(one_span(n)) for n in range(1, 21)]
            gate.set()
            await held
            await asyncio.gather(*waits)

        asyncio.run(scenario())
        assert writer.commits == 1 and writer.events_written == 20
    finally:
        writer.close()
        store.close()


def test_committed_spans_reach_the_database_file_without_the_commit_waiting(
    tmp_path: Path,
) -> None:
    """Commits only append to the WAL; the store's checkpointer thread copies them into the
    database file soon after, so the file alone (without its -wal) holds them."""
    path = tmp_path / "db.sqlite"
    store = SqliteStore(str(path))
    try:
        store.write([one_span(n) for n in range(1, 51)])
        alone = tmp_path / "copy.sqlite"
        deadline = time.monotonic() + 10
        while True:
            shutil.copyfile(path, alone)  # the main file only: what a checkpoint put there
            with sqlite3.connect(alone) as copy:
                count = copy.execute("SELECT count(*) FROM spans").fetchone()[0]
            if count == 50:
                break
            assert time.monotonic() < deadline, f"{count} of 50 spans in the database file"
            time.sleep(0.05)
        assert (tmp_path / "db.sqlite-wal").exists()  # the store is open: WAL mode kept
    finally:
        store.close()
