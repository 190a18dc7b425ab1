"""`tracerelay spool`: inspect, replay and purge batches that a finished process left."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tracerelay.cli import main
from tracerelay.delivery.spool import Spool
from tracerelay.ids import new_event_ids
from tracerelay.mock import MockServer


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


def test_replay_to_a_refusing_server_keeps_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
