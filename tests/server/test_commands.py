"""``tracerelay keys`` against a real database, and the keys it makes against a real server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.server.support import free_port, running_server
from tracerelay.cli import main
from tracerelay.server.storage.sqlite import SqliteStore


def test_keys_create_list_revoke_and_the_server_honours_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_server(tmp_path) as server:
        url = f"sqlite:///{server.database}"
        assert main(["keys", "create", "--project", "shop", "--scopes", "ingest,read",
                     "--database-url", url]) == 0  # fmt: skip
        out = capsys.readouterr().out.strip().splitlines()
        key = out[-1]
        key_id = out[0].split()[2]
        assert key.startswith("tr_") and key_id.startswith("k_")
        assert main(["keys", "list", "--database-url", url]) == 0
        listing = capsys.readouterr().out
        assert key_id in listing and "shop" in listing and "ingest,read" in listing
        assert key not in listing  # only the id is ever shown again
        with server.client(key) as client:
            assert client.get(f"/v1/traces/{'1' * 32}").status_code == 404  # known key, no trace
        assert main(["keys", "revoke", key_id, "--database-url", url]) == 0
        time.sleep(5.2)  # the server remembers a key for 5 s
        with server.client(key) as client:
            refused = client.get(f"/v1/traces/{'1' * 32}")
        assert refused.status_code == 401 and refused.json()["code"] == "TR-AUTH-INVALID"
        assert main(["keys", "revoke", "k_nosuchkey", "--database-url", url]) == 1


def test_keys_refuse_unknown_scopes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["keys", "create", "--scopes", "ingest,write", "--database-url", url]) == 2
    assert "scopes must be some of admin, ingest, read" in capsys.readouterr().out


def test_demo_with_a_server_stores_the_agent_runs_and_says_where_to_look(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "demo.db"
    port = free_port()
    args = ["demo", "--serve", "--exit", "--port", str(port), "--database", str(database)]
    assert main([*args, "--traces", "2"]) == 0
    out = capsys.readouterr().out
    looks = [line.split() for line in out.splitlines() if line.strip().startswith("curl")]
    assert len(looks) == 2
    store = SqliteStore(str(database))
    try:
        for words in looks:
            trace_id = words[-1].rsplit("/", 1)[1]
            (project,) = {k.project_id for k in store.list_keys() if k.project_name == "demo"}
            found = store.get_trace(project, trace_id)
            assert found is not None
            names = {span[2] for span in found["spans"]}
            assert "answer_question" in names and len(found["spans"]) > 5
            assert any(r["event_type"] == "quality_score_create" for r in found["records"])
    finally:
        store.close()


def test_demo_on_port_0_sends_to_and_names_the_port_it_was_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["demo", "--serve", "--exit", "--port", "0", "--database", str(tmp_path / "d.db")]
    assert main([*args, "--traces", "1"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    url = first.rsplit(" ", 1)[1]
    assert not url.endswith(":0") and int(url.rsplit(":", 1)[1]) > 0
    assert not first.startswith("tracerelay demo: 0 records"), first
