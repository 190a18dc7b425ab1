"""The durable spool: round trip, the size bound, corrupt files, ownership across real processes.

Everything runs on real files in ``tmp_path``; the ownership tests start real
Python processes that each hold a ``Spool`` in one directory, kill some with
SIGKILL and let others adopt what they left.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracerelay import TracerelayError
from tracerelay.delivery.spool import Spool, SpoolEntry, inspect_spool

SRC = str(Path(__file__).resolve().parents[2] / "src")
BIG = 1 << 30


def events(count: int, tag: str = "e", blob: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{tag}-{i}",
            "event_type": "observation_create",
            "timestamp": 1700000000.5 + i,
            "payload": {"name": "step", "blob": "x" * blob, "attributes": {"n": i}},
        }
        for i in range(count)
    ]


def batch_bytes(directory: Path | str) -> int:
    return sum(p.stat().st_size for p in Path(directory).glob("*.batch"))


def read_events(spool: Spool, entry: SpoolEntry) -> list[dict[str, Any]]:
    batch = spool.read(entry)
    assert batch is not None, entry
    return batch.events


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tracerelay"]


# --- one process -------------------------------------------------------------------------


def test_round_trip_oldest_first_then_remove(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    with Spool(directory, max_bytes=BIG) as spool:  # fsync on: the default path is covered
        assert (directory.stat().st_mode & 0o777) == 0o700
        before = time.time()
        first = spool.write(events(3, "a"), reason="breaker_open", meta={"endpoint": "x"})
        second = spool.write([MappingProxyType(e) for e in events(2, "b")], reason="timeout")
        third = spool.write(events(1, "c"), reason="retries", attempts=4)
        assert first and second and third
        assert spool.entries() == [first, second, third]
        assert first.created_ns < second.created_ns < third.created_ns
        assert (first.owner, first.event_count) == (spool.owner, 3)
        assert first.size == os.path.getsize(first.path)

        batch = spool.read(first)
        assert batch is not None
        assert batch.events == events(3, "a")
        assert (batch.reason, batch.attempts, batch.meta) == ("breaker_open", 0, {"endpoint": "x"})
        assert before - 1 <= batch.created <= time.time() + 1
        read_second = spool.read(second)
        assert read_second is not None and read_second.events == events(2, "b")
        read_third = spool.read(third)
        assert read_third is not None and read_third.attempts == 4

        spool.remove(second)
        spool.remove(second)  # already gone: fine
        assert spool.entries() == [first, third]
        assert spool.read(second) is None
        stats = spool.stats()
        assert (stats["files"], stats["events"]) == (2, 4)
        assert stats["bytes"] == first.size + third.size
    assert not list(directory.glob(".*.tmp"))


def test_update_attempts_rewrites_in_place_keeping_the_order(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=BIG, fsync=False) as spool:
        old = spool.write(events(2), reason="r", meta={"k": 1})
        new = spool.write(events(1), reason="r")
        assert old and new
        updated = spool.update_attempts(old, 3)
        assert updated is not None and updated.path == old.path
        assert [e.path for e in spool.entries()] == [old.path, new.path]
        batch = spool.read(updated)
        assert batch is not None
        assert (batch.attempts, batch.events, batch.meta) == (3, events(2), {"k": 1})
        spool.remove(updated)
        assert spool.update_attempts(updated, 4) is None


def test_writing_past_max_bytes_evicts_the_oldest_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Spool(tmp_path, max_bytes=BIG, fsync=False) as probe:
        size = probe.write(events(5, "p0", blob=100), reason="r")
        assert size is not None
        probe.remove(size)
    with caplog.at_level(logging.WARNING, logger="tracerelay"):
        with Spool(tmp_path, max_bytes=3 * size.size + 10, fsync=False) as spool:
            written = [spool.write(events(5, f"b{i}", blob=100), reason="r") for i in range(5)]
            assert all(written)
            assert spool.entries() == written[2:]
            assert batch_bytes(tmp_path) <= spool.max_bytes
            stats = spool.stats()
            assert (stats["evicted_files"], stats["evicted_events"]) == (2, 10)
    assert any("oldest batches dropped" in m for m in warnings_of(caplog))


def test_a_batch_larger_than_the_whole_spool_is_dropped_not_the_others(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=2000, fsync=False) as spool:
        kept = spool.write(events(1), reason="r")
        assert spool.write(events(10, blob=500), reason="r") is None
        assert spool.entries() == [kept]
        assert (spool.stats()["evicted_files"], spool.stats()["evicted_events"]) == (1, 10)


def test_eviction_takes_the_oldest_files_of_any_owner(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=BIG, fsync=False) as other:
        old = other.write(events(4, blob=200), reason="r")
        assert old is not None
        with Spool(tmp_path, max_bytes=2 * old.size + 10, fsync=False) as spool:
            mine = [spool.write(events(4, blob=200), reason="r") for _ in range(2)]
            assert other.entries() == []
            assert spool.entries() == mine
            assert spool.stats()["evicted_files"] == 1


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    limit=st.integers(200, 8000),
    batches=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 600)), min_size=1, max_size=14),
)
def test_the_directory_never_exceeds_max_bytes_after_a_write(
    tmp_path: Path, limit: int, batches: list[tuple[int, int]]
) -> None:
    with (
        tempfile.TemporaryDirectory(dir=tmp_path) as directory,
        Spool(directory, max_bytes=limit, fsync=False) as spool,
    ):
        stored: list[SpoolEntry] = []
        total_events = 0
        for i, (count, blob) in enumerate(batches):
            entry = spool.write(events(count, f"w{i}", blob), reason="r")
            total_events += count
            if entry is not None:
                stored.append(entry)
            assert batch_bytes(directory) <= limit
        kept = spool.entries()
        # What survives is always the newest run of what was stored.
        assert kept == stored[len(stored) - len(kept) :]
        stats = spool.stats()
        assert stats["events"] + stats["evicted_events"] == total_events


# --- damaged files -----------------------------------------------------------------------


def _crafted(payload: bytes, count: int) -> bytes:
    # The documented layout, built by hand: a valid header and checksum around any payload.
    head = struct.pack("<4sHHQII", b"TRSP", 1, 0, time.time_ns(), count, len(payload))
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def _truncate(data: bytes) -> bytes:
    return data[:-7]


def _flip_payload(data: bytes) -> bytes:
    return data[:40] + bytes([data[40] ^ 0x01]) + data[41:]


def _flip_header(data: bytes) -> bytes:
    return data[:16] + bytes([data[16] ^ 0x04]) + data[17:]  # the event count


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "truncated": _truncate,
    "flipped payload byte": _flip_payload,
    "flipped header byte": _flip_header,
    "garbage": lambda data: os.urandom(len(data)),
    "empty": lambda data: b"",
    "wrong version": lambda data: data[:4] + b"\x09" + data[5:],
    "checksummed non-JSON": lambda data: _crafted(b"{not json", 2),
    "checksummed wrong shape": lambda data: _crafted(b'{"events": 3}', 2),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_file_is_set_aside_with_a_warning_and_the_rest_still_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    with Spool(tmp_path, max_bytes=BIG, fsync=False) as spool:
        first, bad, last = (spool.write(events(2, t), reason="r") for t in "abc")
        assert first and bad and last
        Path(bad.path).write_bytes(DAMAGE[damage](Path(bad.path).read_bytes()))
        with caplog.at_level(logging.WARNING, logger="tracerelay"):
            assert spool.read(bad) is None
        assert any("is corrupt" in m and "moved to corrupt/" in m for m in warnings_of(caplog))
        assert [p.name.split("-", 1)[1] for p in (tmp_path / "corrupt").iterdir()] == [
            os.path.basename(bad.path)
        ]
        assert spool.entries() == [first, last]
        assert spool.stats()["corrupt"] == 1
        read_first, read_last = spool.read(first), spool.read(last)
        assert read_first and read_first.events == events(2, "a")
        assert read_last and read_last.events == events(2, "c")


def test_a_file_with_a_foreign_name_is_set_aside_and_other_files_left_alone(
    tmp_path: Path,
) -> None:
    (tmp_path / "junk.batch").write_bytes(os.urandom(100))
    (tmp_path / "notes.txt").write_text("not ours")
    with Spool(tmp_path, max_bytes=BIG, fsync=False) as spool:
        entry = spool.write(events(1), reason="r")
        assert spool.entries() == [entry]
        assert spool.stats()["corrupt"] == 1
        assert (tmp_path / "notes.txt").read_text() == "not ours"
        assert [p.name.endswith("-junk.batch") for p in (tmp_path / "corrupt").iterdir()] == [True]


def test_set_aside_files_are_bounded(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=BIG, fsync=False) as spool:
        for i in range(105):
            (tmp_path / f"junk{i}.batch").write_bytes(b"x")
        spool.entries()
        assert spool.stats()["corrupt"] == 105
        assert len(list((tmp_path / "corrupt").iterdir())) == 100


def test_temporary_files_are_ignored_then_recovered_or_deleted_once_their_owner_is_dead(
    tmp_path: Path,
) -> None:
    with Spool(tmp_path, max_bytes=BIG, owner="crashed", fsync=False) as dead:
        whole = dead.write(events(3, "w"), reason="r")
        torn = dead.write(events(3, "t"), reason="r")
    assert whole and torn
    # As a crash would leave them: one fsynced but never renamed, one cut mid-write.
    os.rename(whole.path, tmp_path / ".crashed.7.tmp")
    (tmp_path / ".crashed.8.tmp").write_bytes(Path(torn.path).read_bytes()[:50])
    os.unlink(torn.path)
    with Spool(tmp_path, max_bytes=BIG, fsync=False) as live:
        (tmp_path / f".{live.owner}.999.tmp").write_bytes(b"mid-write")
        assert live.entries() == []
        assert inspect_spool(tmp_path)["temp_files"] == 3
        assert live.adopt_orphans() == 1
        [entry] = live.entries()
        batch = live.read(entry)
        assert batch is not None and batch.events == events(3, "w")
        assert entry.created_ns == whole.created_ns
        left = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
        assert left == [f".{live.owner}.999.tmp"]  # a live owner's temp file is not touched


def test_io_failures_are_counted_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory, max_bytes=BIG)
    entry = spool.write(events(1), reason="r")
    assert entry is not None
    shutil.rmtree(directory)  # the disk is gone from under the spool
    with caplog.at_level(logging.WARNING, logger="tracerelay"):
        assert spool.write(events(2), reason="r") is None
        assert spool.entries() == []
        assert spool.read(entry) is None
        spool.remove(entry)
        assert spool.update_attempts(entry, 1) is None
        assert spool.adopt_orphans() == 0
        stats = spool.stats()
    assert stats["write_errors"] == 1
    assert any("cannot write a batch, not spooled" in m for m in warnings_of(caplog))
    spool.close()
    assert spool.write(events(1), reason="r") is None  # closed: nothing is kept


def test_a_directory_that_cannot_be_created_raises_tr_spool_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a regular file")
    target = tmp_path / "file" / "spool"
    with pytest.raises(TracerelayError) as raised:
        Spool(target, max_bytes=BIG)
    assert raised.value.code == "TR-SPOOL-DIR"
    assert str(target) in str(raised.value)
    assert raised.value.fix and "spool_dir" in raised.value.fix


def test_a_fixed_owner_held_by_a_live_spool_raises_tr_spool_dir(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=BIG, owner="web-1"):
        with pytest.raises(TracerelayError, match="owner 'web-1'") as raised:
            Spool(tmp_path, max_bytes=BIG, owner="web-1")
    assert raised.value.code == "TR-SPOOL-DIR"
    with pytest.raises(ValueError, match="owner"):
        Spool(tmp_path, max_bytes=BIG, owner="a/b")
    with pytest.raises(ValueError, match="max_bytes"):
        Spool(tmp_path, max_bytes=0)


def test_a_fixed_owner_restarting_reowns_its_files_without_reusing_a_name(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=BIG, owner="worker", fsync=False) as first:
        old = [first.write(events(1, str(i)), reason="r") for i in range(3)]
    with Spool(tmp_path, max_bytes=BIG, owner="worker", fsync=False) as again:
        assert again.entries() == old
        new = again.write(events(1, "new"), reason="r")
        assert new is not None and new.path not in {e.path for e in old if e}
        assert again.entries() == [*old, new]


def test_closed_owners_files_are_adopted_but_a_live_owners_never(tmp_path: Path) -> None:
    live = Spool(tmp_path, max_bytes=BIG, fsync=False)
    closed = Spool(tmp_path, max_bytes=BIG, fsync=False)
    live_entries = [live.write(events(2, f"live{i}"), reason="r") for i in range(2)]
    closed_entries = [closed.write(events(2, f"closed{i}"), reason="r") for i in range(3)]
    closed.close()
    with Spool(tmp_path, max_bytes=BIG, fsync=False) as adopter:
        assert adopter.adopt_orphans() == 3
        assert adopter.adopt_orphans() == 0
        assert live.entries() == live_entries
        adopted = adopter.entries()
        assert [e.created_ns for e in adopted] == [e.created_ns for e in closed_entries if e]
        ids = [ev["event_id"] for e in adopted for ev in read_events(adopter, e)]
        assert ids == [f"closed{i}-{j}" for i in range(3) for j in range(2)]
        assert adopter.stats()["adopted"] == 3
    live.close()
    assert not (tmp_path / f"{closed.owner}.lock").exists()


def test_inspect_spool_summarises_every_owner(tmp_path: Path) -> None:
    assert inspect_spool(tmp_path / "missing")["exists"] is False
    with Spool(tmp_path, max_bytes=BIG, owner="gone", fsync=False) as gone:
        gone.write(events(4), reason="r")
    with Spool(tmp_path, max_bytes=BIG, owner="here", fsync=False) as here:
        written = [here.write(events(n), reason="r") for n in (1, 2)]
        (tmp_path / "junk.batch").write_bytes(b"x")
        here.entries()  # sets the junk aside
        summary = inspect_spool(tmp_path)
    assert summary["exists"] is True
    assert (summary["files"], summary["events"], summary["corrupt"]) == (3, 7, 1)
    assert summary["bytes"] == batch_bytes(tmp_path)
    owners = summary["owners"]
    assert list(owners) == ["gone", "here"]
    assert owners["gone"]["alive"] is False and owners["here"]["alive"] is True
    assert (owners["here"]["files"], owners["here"]["events"]) == (2, 3)
    assert owners["here"]["bytes"] == sum(e.size for e in written if e)
    assert 0 <= owners["here"]["oldest_age"] <= owners["gone"]["oldest_age"] < 60


# --- several real processes --------------------------------------------------------------

CHILD = r"""
import json, os, sys, time
from tracerelay.delivery.spool import Spool

directory, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
spool = Spool(directory, max_bytes=1 << 30, fsync=False)
for i in range(count):
    spool.write([{"event_id": f"{spool.owner}/{i}/{j}"} for j in range(3)], reason="test")


def say(value):
    print(json.dumps(value), flush=True)


def names():
    return sorted(os.path.basename(e.path) for e in spool.entries())


if mode == "fork" and os.fork() == 0:
    closed = spool.write([{"event_id": "x"}], reason="x") is None and spool.entries() == []
    say({"grandchild": os.getpid(), "closed": closed})
    time.sleep(20)  # killed by the test long before
    os._exit(0)
say({"owner": spool.owner, "files": names()})
for line in sys.stdin:  # the test closing stdin ends the child
    command = line.split()
    if command[0] == "adopt":
        say("armed")
        deadline = time.monotonic() + 10
        while not os.path.exists(command[1]) and time.monotonic() < deadline:
            time.sleep(0.0002)
        adopted = spool.adopt_orphans()
        say({"adopted": adopted, "files": names()})
"""


class Child:
    """A real process owning a Spool in ``directory``, driven over stdin/stdout."""

    def __init__(self, directory: Path, batches: int, mode: str = "plain") -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(directory), str(batches), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.extra_pids: list[int] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def reply(self, timeout: float = 15.0) -> Any:
        try:
            return json.loads(self._lines.get(timeout=timeout))
        except queue.Empty:
            pytest.fail(f"child {self.proc.pid} said nothing within {timeout} s")

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        for pid in self.extra_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        self._pump.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def start_child() -> Iterator[Callable[..., Child]]:
    started: list[Child] = []

    def start(directory: Path, batches: int, mode: str = "plain") -> Child:
        child = Child(directory, batches, mode)
        started.append(child)
        return child

    yield start
    for child in started:
        child.stop()


def all_event_ids(directory: Path) -> Counter[str]:
    """Every event id in the directory, read through a Spool that adopts everything."""
    with Spool(directory, max_bytes=BIG, fsync=False) as reader:
        reader.adopt_orphans()
        return Counter(ev["event_id"] for e in reader.entries() for ev in read_events(reader, e))


def test_killed_owners_files_are_adopted_exactly_once_by_racing_adopters(
    tmp_path: Path, start_child: Callable[..., Child]
) -> None:
    dead = [start_child(tmp_path, 60) for _ in range(3)]
    adopters = [start_child(tmp_path, 5) for _ in range(2)]
    hello = {child: child.reply() for child in [*dead, *adopters]}
    orphans = [name for child in dead for name in hello[child]["files"]]
    own = [name for child in adopters for name in hello[child]["files"]]
    assert (len(orphans), len(own)) == (180, 10)
    for child in dead:
        child.kill()  # SIGKILL while holding its files: no chance to clean up
    os.unlink(tmp_path / f"{hello[dead[2]]['owner']}.lock")  # as if it died before locking

    # Both adopters wait on one barrier, so they scan and rename at the same moment.
    barrier = tmp_path / "go"
    for child in adopters:
        child.send(f"adopt {barrier}")
    assert [child.reply() for child in adopters] == ["armed", "armed"]
    barrier.touch()
    results = [child.reply() for child in adopters]

    assert sum(r["adopted"] for r in results) == len(orphans)
    first, second = (set(r["files"]) for r in results)
    assert not first & second
    for child, files in zip(adopters, (first, second), strict=True):
        assert set(hello[child]["files"]) <= files  # a live owner keeps its own files
    # Adoption keeps each file's creation time, which the name starts with.
    assert Counter(n[:20] for n in first | second) == Counter(n[:20] for n in orphans + own)
    dead_owners = [hello[child]["owner"] for child in dead]
    assert [p.name for p in tmp_path.iterdir() if any(o in p.name for o in dead_owners)] == []

    # Everything now belongs to a live owner: nobody may take any of it.
    with Spool(tmp_path, max_bytes=BIG, fsync=False) as bystander:
        assert bystander.adopt_orphans() == 0
    barrier.unlink()
    for child in adopters:
        child.send(f"adopt {barrier}")
    assert [child.reply() for child in adopters] == ["armed", "armed"]
    barrier.touch()
    assert [child.reply()["adopted"] for child in adopters] == [0, 0]

    for child in adopters:
        child.stop()
    ids = all_event_ids(tmp_path)
    expected = {
        f"{hello[child]['owner']}/{i}/{j}"
        for child in [*dead, *adopters]
        for i in range(60 if child in dead else 5)
        for j in range(3)
    }
    assert set(ids) == expected
    assert max(ids.values()) == 1  # nothing lost, nothing duplicated


def test_a_forked_child_does_not_keep_its_parents_ownership(
    tmp_path: Path, start_child: Callable[..., Child]
) -> None:
    child = start_child(tmp_path, 4, "fork")
    said = [child.reply(), child.reply()]
    grandchild = next(s for s in said if "grandchild" in s)
    hello = next(s for s in said if "owner" in s)
    child.extra_pids.append(grandchild["grandchild"])
    assert grandchild["closed"] is True
    with Spool(tmp_path, max_bytes=BIG, fsync=False) as spool:
        assert spool.adopt_orphans() == 0  # the parent is alive
        child.kill()
        # Only the forked copy is still running, and it let go of the lock.
        assert spool.adopt_orphans() == 4
        assert len(spool.entries()) == len(hello["files"]) == 4
