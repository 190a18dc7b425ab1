"""Real PostgreSQL and Redis servers for the tests that need them, on 127.0.0.1: PostgreSQL
once per session with a fresh database per test, Redis per test. A missing server fails
loudly, never skips."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
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


def new_database(postgres_server: str) -> str:
    """The URL of a new, empty database on the session's PostgreSQL."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return f"{postgres_server}/{name}"


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """The URL of a new, empty database on the session's PostgreSQL."""
    return new_database(postgres_server)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A new database of each backend in turn, for a module's server: the same queries
    must give the same answers on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'tracerelay.db'}"
    return new_database(request.getfixturevalue("postgres_server"))


class RedisServer:
    """``redis-server`` on 127.0.0.1 (no persistence), stoppable and restartable on its port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed; .ci/run installs it: apt-get install redis-server"
            )
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        with redis.Redis.from_url(self.url) as client:
            for _ in range(200):
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
