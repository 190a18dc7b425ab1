"""The writer process: what its child stores is what the store itself would store, the
pipe loses nothing, and the child neither outlives the server nor dies with its data."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracerelay.ids import new_event_id
from tracerelay.server.ingest.events import read_batch
from tracerelay.server.storage.base import StorageError
from tracerelay.server.storage.merge import version_of
from tracerelay.server.storage.process import WriterProcess, pack, unpack
from tracerelay.server.storage.rows import SpanWrite, WriteBatch
from tracerelay.server.storage.sqlite import SqliteStore

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
HEX = "0123456789abcdef"


def event(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": new_event_id(), "event_type": event_type, "timestamp": 1.5,
            "payload": payload}  # fmt: skip


@st.composite
def batch_bodies(draw: st.DrawFn) -> bytes:
    """A batch of spans (a few attributes of any JSON kind), trace events and scores."""
    events: list[dict[str, Any]] = []
    trace_id = draw(st.text(HEX, min_size=32, max_size=32).filter(lambda s: set(s) != {"0"}))
    for n in range(draw(st.integers(0, 6))):
        start = draw(st.integers(0, 2**62))
        name = draw(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6))
        payload = {
            "trace_id": trace_id,
            "span_id": f"{n + 1:016x}",
            "name": name,
            "start_time_unix_nano": start,
            "end_time_unix_nano": start + draw(st.integers(0, 9)),
            "attributes": draw(st.dictionaries(st.text(max_size=4), JSON, max_size=3)),
            "sequence": draw(st.none() | st.integers(0, 2**63 - 1)),
        }
        events.append(event("observation_create", payload))
    if draw(st.booleans()):
        events.append(event("trace_create", {"trace_id": trace_id, "name": "t", "tags": ["a"]}))
    if draw(st.booleans()):
        score = {"trace_id": trace_id, "name": "q", "value": draw(JSON)}
        events.append(event("quality_score_create", score))
    return orjson.dumps({"events": events, "resource": {"service.name": "svc"}})


def batches_of(bodies: list[bytes], project: str = "p") -> list[WriteBatch]:
    out = []
    for body in bodies:
        parsed = read_batch(body, project).parsed
        assert parsed is not None and not parsed.errors, parsed
        out.append(parsed.batch)
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(batch_bodies(), max_size=4))
def test_a_group_crosses_the_pipe_unchanged(bodies: list[bytes]) -> None:
    batches = batches_of(bodies)
    assert unpack(pack(batches)) == batches


def table(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return sorted(db.execute(sql).fetchall(), key=repr)


def sample_body(n: int) -> bytes:
    """Trace ``n``: three spans (one an error), a trace event and a score."""
    trace_id = f"{n + 1:032x}"
    spans = [{"event_id": new_event_id(), "event_type": "observation_create", "timestamp": 1.5,
              "payload": {"trace_id": trace_id, "span_id": f"{i + 1:016x}", "name": f"s{i}",
                          "parent_span_id": None if i == 0 else f"{1:016x}",
                          "start_time_unix_nano": 10 * n + i, "end_time_unix_nano": 10 * n + 5,
                          "status": {"code": "error" if i == 2 else "ok", "message": ""},
                          "attributes": {"n": n, "i": [i, "x"]}}}
             for i in range(3)]  # fmt: skip
    others = [
        {"event_id": new_event_id(), "event_type": "trace_create", "timestamp": 2.0,
         "payload": {"trace_id": trace_id, "name": f"t{n}", "user_id": "u"}},
        {"event_id": new_event_id(), "event_type": "quality_score_create", "timestamp": 3.0,
         "payload": {"trace_id": trace_id, "name": "quality", "value": 0.5}},
    ]  # fmt: skip
    return orjson.dumps({"events": spans + others, "resource": {"service.name": "svc"}})


def test_the_child_stores_what_the_store_would(tmp_path: Path) -> None:
    bodies = [sample_body(n) for n in range(12)]
    groups = [batches_of(bodies[:5]), batches_of(bodies[5:]), batches_of(bodies[3:8])]
    direct = SqliteStore(str(tmp_path / "direct.db"))
    SqliteStore(str(tmp_path / "child.db")).close()  # migrated, as the server's start does
    process = WriterProcess(str(tmp_path / "child.db"), "")
    try:
        for group in groups:  # the last group repeats events of the first two
            expected = direct.write(group)
            assert process.write(group) == expected
        assert any(result.duplicates for result in expected)
    finally:
        process.close()
        direct.close()
    for sql in (
        "SELECT * FROM spans",
        "SELECT project_id, trace_id, name, span_count, error_count, start_ns, body FROM traces",
        "SELECT * FROM records",
    ):
        assert table(tmp_path / "child.db", sql) == table(tmp_path / "direct.db", sql)


def one_span(n: int) -> list[WriteBatch]:
    event_id = f"{n:026d}"
    versions = orjson.dumps({"v": version_of(1.0, event_id)}).decode()
    row = ("p", f"{n:032x}", f"{n:016x}", None, "s", None, n, n + 1, None, "unset", None,
           versions, "{}")  # fmt: skip
    return [WriteBatch("p", [SpanWrite(row[1], row[2], row, event_id)])]


def test_a_killed_child_fails_its_group_and_is_started_again(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    SqliteStore(str(path)).close()
    process = WriterProcess(str(path), "")
    try:
        process.write(one_span(1))
        first = process.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        with pytest.raises(StorageError, match="writer process stopped"):
            process.write(one_span(2))
        process.write(one_span(3))  # a new child takes the next group
        assert process.pid not in (None, first) and process.starts == 2
    finally:
        process.close()
    assert table(path, "SELECT span_id FROM spans") == [(f"{1:016x}",), (f"{3:016x}",)]


def test_a_failed_write_is_a_storage_error_and_the_child_lives_on(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    SqliteStore(str(path)).close()
    process = WriterProcess(str(path), "")
    try:
        (bad,) = one_span(1)
        row = (*bad.spans[0].row[:-1], None)  # body is NOT NULL
        with pytest.raises(StorageError, match="NOT NULL"):
            process.write([WriteBatch("p", [SpanWrite(row[1], row[2], row, "e")])])
        process.write(one_span(2))
        assert process.starts == 1
    finally:
        process.close()
    assert table(path, "SELECT span_id FROM spans") == [(f"{2:016x}",)]


def test_a_store_that_cannot_open_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open"):
        WriterProcess(str(tmp_path / "no" / "such" / "dir" / "\0.db"), "")


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # exited (a zombie waits only for its reaper)


def test_close_stops_the_child(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    SqliteStore(str(path)).close()
    process = WriterProcess(str(path), "")
    pid = process.pid
    assert pid is not None and not gone(pid)
    process.close()
    assert gone(pid)


def test_the_child_exits_when_the_server_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    SqliteStore(str(path)).close()
    script = (
        "import sys, time\n"
        "from tracerelay.server.storage.process import WriterProcess\n"
        "if __name__ == '__main__':\n"
        f"    p = WriterProcess({str(path)!r}, '')\n"
        "    print(p.pid, flush=True)\n"
        "    time.sleep(60)\n"
    )
    (tmp_path / "server.py").write_text(script)
    parent = subprocess.Popen(
        [sys.executable, str(tmp_path / "server.py")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not gone(child)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while not gone(child):
            assert time.monotonic() < deadline, "the writer outlived its server"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()


def test_groups_sent_back_to_back_are_each_answered_with_their_own_repeats(
    tmp_path: Path,
) -> None:
    """The child may take several waiting groups into one transaction; each group's
    answer still comes back in the order sent, holding its own repeats only."""
    path = tmp_path / "db.sqlite"
    SqliteStore(str(path)).close()
    process = WriterProcess(str(path), "")
    answers: list[tuple[int, set[str]]] = []
    done = threading.Event()
    groups = 40

    def answer(n: int) -> Any:
        def told(results: Any, error: BaseException | None) -> None:
            assert error is None, error
            answers.append((n, results[0].duplicates))
            if len(answers) == groups:
                done.set()

        return told

    try:
        for n in range(groups):  # group n: span n + 1, and span n again (a repeat)
            spans = one_span(n + 1)[0].spans + (one_span(n)[0].spans if n else [])
            process.send([WriteBatch("p", spans)], answer(n))
            if n < groups // 2:  # the first half one transaction each, the rest at once
                deadline = time.monotonic() + 10
                while len(answers) <= n:
                    assert time.monotonic() < deadline
                    time.sleep(0.005)
        assert done.wait(30)
    finally:
        process.close()
    assert [n for n, _ in answers] == list(range(groups))
    assert [ids for _, ids in answers] == [set()] + [{f"{n:026d}"} for n in range(1, groups)]
    assert len(table(path, "SELECT span_id FROM spans")) == groups
