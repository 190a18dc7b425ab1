"""A real PostgreSQL server for the tests that need one: started once per session on
127.0.0.1, a fresh database per test. Missing PostgreSQL fails loudly, never skips."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.server.support import free_port


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: run them as the postgres user then.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); "
            ".ci/run installs it: apt-get install postgresql"
        )
    bin_dir = os.path.dirname(found[-1])
    # Under /tmp itself: pytest's own temporary folders are private to root.
    directory = tempfile.mkdtemp(prefix="tracerelay-pg-", dir="/tmp")
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
    data, port = os.path.join(directory, "data"), free_port()
    subprocess.run(
        _as_postgres([f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres"]),
        check=True, capture_output=True,
    )  # fmt: skip
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1"
    subprocess.run(
        _as_postgres([f"{bin_dir}/pg_ctl", "-D", data, "-o", options, "-l",
                      os.path.join(directory, "log"), "-w", "start"]),
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_postgres([f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """The URL of a new, empty database on the session's PostgreSQL."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return f"{postgres_server}/{name}"
