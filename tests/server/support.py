"""A real tracerelay server for tests: uvicorn on 127.0.0.1, a fresh SQLite file, a known key."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tracerelay.server.app import create_app
from tracerelay.server.settings import ServerSettings

ADMIN_KEY = "tr_test_admin_key_0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    database: Path
    settings: ServerSettings

    def client(self, key: str | None = ADMIN_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)

    def trace(self, trace_id: str, key: str = ADMIN_KEY) -> dict[str, Any]:
        with self.client(key) as client:
            response = client.get(f"/v1/traces/{trace_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())


@contextmanager
def running_server(tmp_path: Path, **options: Any) -> Iterator[RunningServer]:
    """Start ``create_app`` under uvicorn in a thread of this process; stop it after."""
    database = tmp_path / "tracerelay.db"
    options.setdefault("database_url", f"sqlite:///{database}")
    settings = ServerSettings(
        port=free_port(),
        bootstrap_key=ADMIN_KEY,
        **options,
    )
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=settings.port,
        log_level="error",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the tracerelay server did not start")
        time.sleep(0.02)
    try:
        yield RunningServer(f"http://127.0.0.1:{settings.port}", database, settings)
    finally:
        server.should_exit = True
        thread.join(20)
