"""The durable spool: round trip, the file format, the size bound, corrupt files, ownership.

Everything runs on real files in ``tmp_path``; the ownership tests start real
Python processes that each hold a ``Spool`` in one directory, kill some with
SIGKILL and let others adopt what they left. Files of the previous release's
format (version 1) and damaged or hostile files are built byte by byte here,
from the layout ``_spoolfile`` documents.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import queue
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracerelay import TracerelayError
from tracerelay.delivery import _spoolfile
from tracerelay.delivery.encoding import EncodedEvent
from tracerelay.delivery.spool import Spool, SpoolEntry, inspect_spool

SRC = str(Path(__file__).resolve().parents[2] / "src")
BIG = 1 << 30


def noise(size: int, seed: int) -> str:
    """``size`` characters that do not compress (below 0.8), the same for the same seed."""
    return base64.b64encode(random.Random(seed).randbytes(size)).decode()[:size]


def events(count: int, tag: str = "e", blob: int = 0) -> list[dict[str, Any]]:
    # The blob is noise so that ``blob`` sets the stored size, compression or not.
    return [
        {
            "event_id": f"{tag}-{i}",
            "event_type": "observation_create",
            "timestamp": 1700000000.5 + i,
            "payload": {"name": "step", "blob": noise(blob, i), "attributes": {"n": i}},
        }
        for i in range(count)
    ]


def span_events(count: int, seed: int = 0) -> list[EncodedEvent]:
    """Span envelopes as the exporter encodes them: ~400 bytes, random ids and timings."""
    rng = random.Random(seed)
    trace_id, out = rng.randbytes(16).hex(), []
    for i in range(count):
        event_id = "01J" + rng.randbytes(12).hex()[:23].upper()
        start = 1_700_000_000_000_000_000 + i * 1_250_000 + rng.randrange(1000)
        payload = {
            "trace_id": trace_id,
            "span_id": rng.randbytes(8).hex(),
            "parent_span_id": rng.randbytes(8).hex(),
            "name": "db.query",
            "type": "tool",
            "start_time_unix_nano": start,
            "end_time_unix_nano": start + rng.randrange(10**6),
            "status": "ok",
            "attributes": {"db.system": "postgresql", "rows": rng.randrange(50)},
        }
        envelope = {
            "event_id": event_id,
            "event_type": "observation_create",
            "timestamp": start / 1e9,
            "payload": payload,
        }
        out.append(EncodedEvent(event_id, orjson.dumps(envelope)))
    return out


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


def test_a_batch_stored_after_a_newer_one_is_still_evicted_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches are compressed outside the lock: an older one may be stored second.
    real_encode, entered, release = _spoolfile.encode, threading.Event(), threading.Event()

    def encode(created_ns: int, batch: Any) -> bytes:
        if batch.ids[0].startswith("old"):
            entered.set()
            release.wait(10)
        return real_encode(created_ns, batch)

    with Spool(tmp_path / "probe", max_bytes=BIG, fsync=False) as probe:
        size = probe.write(events(2, "prb", blob=300), reason="r")
        assert size is not None
    monkeypatch.setattr("tracerelay.delivery.spool.encode", encode)
    with Spool(tmp_path / "spool", max_bytes=size.size * 5 // 2, fsync=False) as spool:
        older: list[SpoolEntry | None] = []
        writer = threading.Thread(
            target=lambda: older.append(spool.write(events(2, "old", blob=300), reason="r"))
        )
        writer.start()
        assert entered.wait(10)
        newer = spool.write(events(2, "new", blob=300), reason="r")
        release.set()
        writer.join(10)
        assert newer and older[0] and older[0].created_ns < newer.created_ns
        assert spool.entries() == [older[0], newer]
        newest = spool.write(events(2, "far", blob=300), reason="r")
        assert spool.entries() == [newer, newest]


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


# --- the file format ----------------------------------------------------------------------

V1_HEAD = "<4sHHQII"  # magic, version 1, reserved 0, created_ns, events, payload length
V2_HEAD = "<4sHHQIII"  # magic, version 2, flags, created_ns, events, stored length, raw length


def version_1_file(
    events: list[dict[str, Any]],
    *,
    created_ns: int,
    reason: str = "r",
    attempts: int = 0,
    meta: dict[str, Any] | None = None,
    raw_events: list[bytes] | None = None,
) -> bytes:
    """A batch file as the previous release wrote it (format version 1), byte for byte."""
    # Its encoder, inlined: orjson of the fields, or the encoded events spliced in.
    fields = {"reason": reason, "attempts": attempts, "created": created_ns / 1e9}
    fields["meta"] = meta or {}
    if raw_events is None:
        payload, count = orjson.dumps({"events": events, **fields}), len(events)
    else:
        payload = b'{"events":[' + b",".join(raw_events) + b"]," + orjson.dumps(fields)[1:]
        count = len(raw_events)
    head = struct.pack(V1_HEAD, b"TRSP", 1, 0, created_ns, count, len(payload))
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def version_2_file(
    payload: bytes,
    count: int,
    *,
    flags: int = 1,
    stored: bytes | None = None,
    raw_length: int | None = None,
) -> bytes:
    """A version-2 file around any payload, checksum valid; by default compressed, lengths true."""
    if stored is None:
        stored = zlib.compress(payload, 9) if flags & 1 else payload
    raw_length = len(payload) if raw_length is None else raw_length
    head = struct.pack(V2_HEAD, b"TRSP", 2, flags, time.time_ns(), count, len(stored), raw_length)
    return head + struct.pack("<I", zlib.crc32(stored, zlib.crc32(head))) + stored


def first_line(ids: list[str]) -> bytes:
    return orjson.dumps({"reason": "r", "attempts": 0, "created": 1.0, "meta": {}, "ids": ids})


def header(path: str) -> tuple[Any, ...]:
    return struct.unpack_from(V2_HEAD, Path(path).read_bytes())


def test_encoded_events_come_back_byte_for_byte_with_their_ids(tmp_path: Path) -> None:
    # Valid JSON that orjson would write differently: re-encoding anywhere would show.
    written = [
        EncodedEvent("01JA", b'{"event_id": "01JA",  "n": 1.50, "s": "caf\\u00e9"}'),
        EncodedEvent("id with spaces/\u00e9", '{"event_id":"x", "s":"raw é"}'.encode()),
        EncodedEvent("", b'{"nested": {"text": "line\\nbreak"}}'),
    ]
    assert all(orjson.dumps(orjson.loads(e.data)) != e.data for e in written)
    with Spool(tmp_path, max_bytes=BIG, fsync=False) as spool:
        entry = spool.write_encoded(written, reason="breaker_open", attempts=2, meta={"k": "x"})
        assert entry is not None and entry.event_count == 3
        batch = spool.read(entry)
        assert batch is not None
        assert batch.encoded() == written
        assert list(batch.data) == [e.data for e in written]
        assert list(batch.ids) == [e.event_id for e in written]
        assert (batch.count, batch.reason, batch.attempts, batch.meta) == (
            3,
            "breaker_open",
            2,
            {"k": "x"},
        )
        assert batch.events == [orjson.loads(e.data) for e in written]  # parsed on demand
        updated = spool.update_attempts(entry, 3)
        assert updated is not None
        again = spool.read(updated)
        assert again is not None and (again.encoded(), again.attempts) == (written, 3)


def test_a_raw_newline_in_an_event_is_stored_as_the_space_it_means(tmp_path: Path) -> None:
    # orjson never writes one; pretty-printed JSON from elsewhere has them between tokens.
    pretty = EncodedEvent("p", b'{\n  "event_id": "p",\n  "n": 1\n}')
    with Spool(tmp_path, max_bytes=BIG, fsync=False) as spool:
        entry = spool.write_encoded([pretty, EncodedEvent("q", b"{}")], reason="r")
        assert entry is not None
        batch = spool.read(entry)
        assert batch is not None
        assert list(batch.data) == [b'{   "event_id": "p",   "n": 1 }', b"{}"]
        assert batch.events == [{"event_id": "p", "n": 1}, {}]


def test_span_batches_are_stored_compressed_at_well_under_half_their_size(tmp_path: Path) -> None:
    spans = span_events(1000)
    raw = sum(len(e.data) for e in spans)
    with Spool(tmp_path, max_bytes=BIG, fsync=False) as spool:
        entry = spool.write_encoded(spans, reason="breaker_open")
        assert entry is not None
        magic, version, flags, _, count, stored, length = header(entry.path)
        assert (magic, version, flags, count) == (b"TRSP", 2, 1, 1000)
        assert stored + 32 == entry.size and length > raw
        # Random ids and timings are most of what is left: 0.21 of raw at level 1.
        assert entry.size < 0.3 * raw
        batch = spool.read(entry)
        assert batch is not None and batch.encoded() == spans


def test_a_batch_that_does_not_shrink_is_stored_uncompressed(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=BIG, fsync=False) as spool:
        entry = spool.write_encoded([EncodedEvent("a", b"{}")], reason="r")
        empty = spool.write([], reason="r")
        assert entry and empty
        for written in (entry, empty):
            _, version, flags, _, _, stored, length = header(written.path)
            assert (version, flags, stored) == (2, 0, length)
        one, none = spool.read(entry), spool.read(empty)
        assert one is not None and one.encoded() == [EncodedEvent("a", b"{}")]
        assert none is not None and (none.count, none.events) == (0, [])


def test_a_file_built_from_the_documented_layout_is_read(tmp_path: Path) -> None:
    # So that the damaged variants below fail for what was damaged, not for the layout.
    for flags in (0, 1):
        with Spool(tmp_path / str(flags), max_bytes=BIG, fsync=False) as spool:
            entry = spool.write(events(1), reason="r")
            assert entry is not None
            payload = first_line(["a", "b"]) + b'\n{"event_id":"a"}\n{}'
            Path(entry.path).write_bytes(version_2_file(payload, 2, flags=flags))
            batch = spool.read(entry)
            assert batch is not None
            assert batch.encoded() == [
                EncodedEvent("a", b'{"event_id":"a"}'),
                EncodedEvent("b", b"{}"),
            ]
            assert (batch.reason, batch.attempts, batch.created, batch.meta) == ("r", 0, 1.0, {})


def test_version_1_files_of_the_previous_release_are_read_adopted_and_rewritten_as_2(
    tmp_path: Path,
) -> None:
    plain, spans = events(3, "old"), span_events(2)
    created = time.time_ns() - 10**9
    (tmp_path / f"{created:020d}-previous-1-3.batch").write_bytes(
        version_1_file(plain, created_ns=created, reason="breaker_open", attempts=2, meta={"k": 1})
    )
    (tmp_path / f"{created + 1:020d}-previous-2-2.batch").write_bytes(
        version_1_file([], created_ns=created + 1, raw_events=[e.data for e in spans])
    )
    # A whole batch never renamed: its writer died between the fsync and the rename.
    temp = version_1_file(events(1, "temp"), created_ns=created + 2)
    (tmp_path / ".previous.3.tmp").write_bytes(temp)
    with Spool(tmp_path, max_bytes=BIG, fsync=False) as spool:
        assert spool.adopt_orphans() == 3
        first, second, third = spool.entries()
        assert [e.event_count for e in (first, second, third)] == [3, 2, 1]
        old = spool.read(first)
        assert old is not None
        assert old.events == plain
        assert old.encoded() == [EncodedEvent(e["event_id"], orjson.dumps(e)) for e in plain]
        assert (old.reason, old.attempts, old.created, old.meta) == (
            "breaker_open",
            2,
            created / 1e9,
            {"k": 1},
        )
        spliced = spool.read(second)
        assert spliced is not None and spliced.encoded() == spans
        recovered = spool.read(third)
        assert recovered is not None and recovered.events == events(1, "temp")

        updated = spool.update_attempts(first, 3)
        assert updated is not None and header(updated.path)[1] == 2
        rewritten = spool.read(updated)
        assert rewritten is not None
        assert (rewritten.encoded(), rewritten.attempts) == (old.encoded(), 3)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batch=st.lists(
        st.tuples(st.text(), st.dictionaries(st.text(), json_values, max_size=5)), max_size=12
    ),
    reason=st.text(),
    attempts=st.integers(0, 2**31),
    meta=st.dictionaries(st.text(), json_values, max_size=3),
)
def test_any_encoded_batch_round_trips_exactly(
    tmp_path: Path,
    batch: list[tuple[str, dict[str, Any]]],
    reason: str,
    attempts: int,
    meta: dict[str, Any],
) -> None:
    written = [EncodedEvent(event_id, orjson.dumps(event)) for event_id, event in batch]
    with (
        tempfile.TemporaryDirectory(dir=tmp_path) as directory,
        Spool(directory, max_bytes=BIG, fsync=False) as spool,
    ):
        entry = spool.write_encoded(written, reason=reason, attempts=attempts, meta=meta)
        assert entry is not None and entry.event_count == len(written)
        stored = spool.read(entry)
        assert stored is not None
        assert stored.encoded() == written
        assert (stored.reason, stored.attempts, stored.meta) == (reason, attempts, meta)


# --- damaged files -----------------------------------------------------------------------


def _crafted(payload: bytes, count: int) -> bytes:
    # Format version 1, built by hand: a valid header and checksum around any payload.
    head = struct.pack(V1_HEAD, b"TRSP", 1, 0, time.time_ns(), count, len(payload))
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def _truncate(data: bytes) -> bytes:
    return data[:-7]


def _flip_payload(data: bytes) -> bytes:
    return data[:40] + bytes([data[40] ^ 0x01]) + data[41:]


def _flip_header(data: bytes) -> bytes:
    return data[:16] + bytes([data[16] ^ 0x04]) + data[17:]  # the event count


def _flip_compressed_rechecksummed(data: bytes) -> bytes:
    # Damage the checksum cannot see (it was recomputed): only inflating can find it.
    assert struct.unpack_from(V2_HEAD, data)[2] == 1, "the batch was stored compressed"
    head, stored = data[:28], _flip_payload(data)[32:]
    return head + struct.pack("<I", zlib.crc32(stored, zlib.crc32(head))) + stored


_ONE = first_line(["a"]) + b'\n{"event_id":"a"}'


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "truncated": _truncate,
    "flipped payload byte": _flip_payload,
    "flipped header byte": _flip_header,
    "garbage": lambda data: os.urandom(len(data)),
    "empty": lambda data: b"",
    "wrong version": lambda data: data[:4] + b"\x09" + data[5:],
    "checksummed non-JSON": lambda data: _crafted(b"{not json", 2),
    "checksummed wrong shape": lambda data: _crafted(b'{"events": 3}', 2),
    "flipped compressed byte, checksum redone": _flip_compressed_rechecksummed,
    "v2 first line not JSON": lambda data: version_2_file(b"{not json\n{}", 1),
    "v2 first line missing ids": lambda data: version_2_file(b'{"reason": "r"}\n{}', 1),
    "v2 ids not a list": lambda data: version_2_file(_ONE.replace(b'"ids":["a"]', b'"ids":"a"'), 1),
    "v2 fewer events than ids": lambda data: version_2_file(_ONE, 2),
    "v2 more events than declared": lambda data: version_2_file(_ONE + b"\n{}", 1),
    "v2 unknown flag": lambda data: version_2_file(_ONE, 1, flags=2),
    "v2 says compressed, is not": lambda data: version_2_file(_ONE, 1, stored=_ONE),
    "v2 junk after the stream": lambda data: version_2_file(
        _ONE, 1, stored=zlib.compress(_ONE) + b"junk"
    ),
    "v2 declared length too long": lambda data: version_2_file(_ONE, 1, raw_length=len(_ONE) + 9),
    "v2 declared length zero": lambda data: version_2_file(_ONE, 1, raw_length=0),
    "v2 uncompressed, lengths differ": lambda data: version_2_file(
        _ONE, 1, flags=0, raw_length=len(_ONE) + 1
    ),
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


def test_a_payload_inflating_past_its_declared_length_is_refused_without_inflating_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    line = first_line(["a"]) + b"\n"
    bomb = line + b"{" + b" " * (64 << 20) + b"}"  # one valid event: 64 MiB of whitespace
    stored = zlib.compress(bomb, 9)
    hostile = [
        # Declares the size of a small batch: inflating stops there.
        version_2_file(bomb, 1, stored=stored, raw_length=len(line) + 2),
        # Declares more than deflate can produce from what is stored: refused unread.
        version_2_file(bomb, 1, stored=stored, raw_length=0xFFFF_FFFF),
    ]
    with Spool(tmp_path, max_bytes=BIG, fsync=False) as spool:
        entries = [spool.write(events(1), reason="r") for _ in hostile]
        for entry, data in zip(entries, hostile, strict=True):
            assert entry is not None
            Path(entry.path).write_bytes(data)
        tracemalloc.start()
        try:
            with caplog.at_level(logging.WARNING, logger="tracerelay"):
                assert [spool.read(e) for e in entries if e] == [None, None]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert spool.stats()["corrupt"] == 2
    assert peak < 2 << 20, peak  # a few times the 65 KB file, not the 64 MiB it inflates to
    assert any("is corrupt" in m and "moved to corrupt/" in m for m in warnings_of(caplog))


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


def say(value):  # one write: a forked copy may be saying something too (and -u splits print)
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


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
