"""`tracerelay spool`: inspect, replay and purge batches that a finished process left."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.delivery.test_spool import version_1_file
from tracerelay import _diagnostics
from tracerelay.cli import main
from tracerelay.delivery.spool import Spool
from tracerelay.ids import new_event_ids
from tracerelay.mock import MockServer
from tracerelay.serialization import dumps, loads


def leave_batches(directory: Path, batches: int, per_batch: int) -> list[str]:
    """Write batches from another process that then exits, as a crashed app would."""
    ids = new_event_ids(batches * per_batch)
    code = (
        "import sys, json\n"
        "from tracerelay.delivery.spool import Spool\n"
        "ids = json.loads(sys.argv[2]); per = int(sys.argv[3])\n"
        "s = Spool(sys.argv[1], max_bytes=10**8, fsync=False)\n"
        "for i in range(0, len(ids), per):\n"
        "    s.write([{'event_id': e, 'event_type': 'event_create', 'timestamp': 1.0,\n"
        "              'payload': {'name': 'left'}} for e in ids[i:i + per]], reason='outage')\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(directory), json.dumps(ids), str(per_batch)],
        check=True,
        timeout=30,
    )
    return ids


def test_inspect_then_replay_then_nothing_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = leave_batches(tmp_path, batches=4, per_batch=25)
    assert main(["spool", "inspect", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4 batches, 100 events" in out and "gone" in out

    with MockServer(seed=1) as server:
        code = main(["spool", "replay", "--dir", str(tmp_path), "--endpoint", server.url])
        assert set(server.received) == set(ids)
    captured = capsys.readouterr()
    assert code == 0
    assert "replayed 4 batches (100 events)" in captured.out
    assert "4/4 batches" in captured.err  # the progress bar
    assert not list(tmp_path.glob("*.batch"))


def test_replay_sends_the_stored_bytes_parsing_one_line_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = leave_batches(tmp_path, batches=4, per_batch=25)
    calls = {"loads": 0, "dumps": 0}

    def counted(name: str, function: Any) -> Any:
        def wrapper(value: Any) -> Any:
            calls[name] += 1
            return function(value)

        return wrapper

    # The spool file module parses with ``loads``; the deliverer encodes with ``dumps``.
    monkeypatch.setattr("tracerelay.delivery._spoolfile.loads", counted("loads", loads))
    monkeypatch.setattr("tracerelay.delivery.deliverer.dumps", counted("dumps", dumps))
    with MockServer(seed=1) as server:
        assert main(["spool", "replay", "--dir", str(tmp_path), "--endpoint", server.url]) == 0
        assert set(server.received) == set(ids)
        assert all(server.events[i] == {"name": "left"} for i in ids)
    assert calls == {"loads": 4, "dumps": 0}  # each batch's first line; no event
    assert "replayed 4 batches (100 events)" in capsys.readouterr().out


def test_replay_sends_version_1_batches_the_previous_release_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = new_event_ids(30)
    created = time.time_ns() - 10**9
    for n in range(3):
        events = [
            {"event_id": e, "event_type": "event_create", "timestamp": 1.0, "payload": {"n": n}}
            for e in ids[n * 10 : (n + 1) * 10]
        ]
        name = f"{created + n:020d}-previous-{n + 1}-10.batch"  # no lock file: its owner is gone
        (tmp_path / name).write_bytes(version_1_file(events, created_ns=created + n))
    with MockServer(seed=1) as server:
        assert main(["spool", "replay", "--dir", str(tmp_path), "--endpoint", server.url]) == 0
        assert set(server.received) == set(ids)
        assert [server.events[e] for e in ids] == [{"n": i // 10} for i in range(30)]
    assert "replayed 3 batches (30 events)" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.batch"))


def test_replay_to_a_refusing_server_keeps_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The rejection is warned once per process: kept from silencing later tests' warnings.
    monkeypatch.setattr(_diagnostics, "_warned", set())
    leave_batches(tmp_path, batches=2, per_batch=5)
    with MockServer(api_key="right", seed=1) as server:
        code = main(
            ["spool", "replay", "--dir", str(tmp_path), "--endpoint", server.url,
             "--api-key", "wrong"]
        )  # fmt: skip
        assert server.received == {}
    assert code == 1
    assert "2 batches (10 events) could not be sent" in capsys.readouterr().err
    assert len(list(tmp_path.glob("*.batch"))) == 2


def test_purge_needs_yes_and_spares_running_owners(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leave_batches(tmp_path, batches=3, per_batch=2)
    with Spool(tmp_path, max_bytes=10**8, fsync=False) as live:
        live.write([{"event_id": "0" * 26}], reason="in flight")
        assert main(["spool", "purge", "--dir", str(tmp_path)]) == 2
        assert len(list(tmp_path.glob("*.batch"))) == 4
        assert main(["spool", "purge", "--dir", str(tmp_path), "--yes"]) == 0
        assert "purged 3 batches (6 events)" in capsys.readouterr().out
        assert [e.event_count for e in live.entries()] == [1]


def test_inspect_of_a_missing_folder_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["spool", "--dir", str(tmp_path / "never")]) == 0
    assert "does not exist" in capsys.readouterr().out
