"""``MockServer``: the mock ingest server's public face and lifecycle.

It owns what outlives one run of the HTTP server (fault settings, the seeded
random generator, the ``Ledger`` of received events) and starts and stops a
``MockHTTPServer`` on the same port as often as a test wants.
"""

from __future__ import annotations

import hmac
import random
import socket
import threading
import time
from types import TracebackType
from typing import Any

from tracerelay.mock._faults import Faults
from tracerelay.mock._http import POLL_INTERVAL_S, MockHTTPServer
from tracerelay.mock._ingest import Ledger

__all__ = ["MockServer"]


class MockServer:
    """A fake ingest server that injects faults, for testing delivery (``tracerelay mock``).

    Serves ``POST /v1/telemetry/batch`` and ``POST /v1/uploads/stream`` per SPEC §2,
    ``GET /health`` (never faulted), and control endpoints that are never faulted
    either: ``GET /mock/stats``, ``GET /mock/events``, ``GET``/``POST /mock/faults``
    and ``POST /mock/reset``. ``port=0`` picks a free port at the first ``start()``;
    later starts reuse it, so ``stop()`` then ``start()`` simulates an outage. What
    was received survives a restart, as a real server's database would; ``reset()``
    forgets it. Faults come from a ``random.Random(seed)``: the same seed and the
    same sequence of requests give the same faults.

    With ``upstream`` (a tracerelay server's URL) the mock is a faulty proxy: an
    ingest request that draws no fault, or draws ``slow`` or ``lost_reply``, is
    forwarded there (body and ``Authorization``/``Content-*`` headers as
    received) and answered with the upstream's answer — late, or not at all
    after the upstream processed it. The events are recorded here too, so the
    stats still say what went through.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: Faults | None = None,
        api_key: str | None = None,
        max_body_bytes: int = 5_000_000,
        max_decompressed_bytes: int = 50_000_000,
        seed: int | None = None,
        max_connections: int = 64,
        upstream: str | None = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be from 0 (any free port) to 65535, got {port!r}")
        limits = {
            "max_body_bytes": max_body_bytes,
            "max_decompressed_bytes": max_decompressed_bytes,
            "max_connections": max_connections,
        }
        for name, value in limits.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        if faults is not None and not isinstance(faults, Faults):
            raise TypeError(f"faults must be a Faults instance, got {type(faults).__name__}")
        if api_key is not None and not api_key:
            raise ValueError("api_key must be a non-empty string, or None to accept any request")
        if upstream is not None and not upstream.startswith(("http://", "https://")):
            raise ValueError(f"upstream must be an http(s) URL, got {upstream!r}")
        self.upstream = None if upstream is None else upstream.rstrip("/")
        self.host = host
        self.max_body_bytes = max_body_bytes
        self.max_decompressed_bytes = max_decompressed_bytes
        self._port = port
        self._max_connections = max_connections
        self._api_key = None if api_key is None else api_key.encode()
        self._seed = seed
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._faults = faults or Faults()
        self._ledger = Ledger()
        self._lifecycle = threading.Lock()
        self._httpd: MockHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<MockServer {self.host}:{self._port or '?'} {state}>"

    @property
    def port(self) -> int:
        """The port served on; known once the server has started (``port=0``) or was given."""
        if self._port == 0:
            raise RuntimeError("port 0 means 'any free port': it is chosen by start()")
        return self._port

    @property
    def url(self) -> str:
        """The base URL to point a client at, e.g. ``http://127.0.0.1:54321``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._httpd is not None

    def start(self) -> MockServer:
        """Start serving in a background thread; returns the server. Raises OSError if bound."""
        with self._lifecycle:
            if self._httpd is not None:
                raise RuntimeError("the mock server is already running")
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            httpd = MockHTTPServer(self, (self.host, self._port), family, self._max_connections)
            self._port = httpd.server_port
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": POLL_INTERVAL_S},
                name=f"tracerelay-mock:{self._port}",
                daemon=True,
            )
            thread.start()
            self._httpd, self._thread = httpd, thread
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening and drop every open connection, waiting up to ``timeout`` seconds.

        Slow replies in progress are cut off. Received events are kept. Does nothing
        when not running.
        """
        with self._lifecycle:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
            if httpd is None or thread is None:
                return
            deadline = time.monotonic() + timeout
            httpd.stopping.set()
            httpd.shutdown()
            httpd.server_close()
            for worker in [thread, *httpd.disconnect_all()]:
                worker.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def faults(self) -> Faults:
        """The fault settings in force."""
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        """Replace the fault settings; requests already being handled keep the old ones."""
        if not isinstance(faults, Faults):
            raise TypeError(f"faults must be a Faults instance, got {type(faults).__name__}")
        self._faults = faults

    @property
    def received(self) -> dict[str, int]:
        """Event id → how many times a valid event with that id arrived (a copy)."""
        return self._ledger.received()

    @property
    def events(self) -> dict[str, dict[str, Any]]:
        """Event id → the payload of the latest valid delivery of that event (a copy)."""
        return self._ledger.payloads()

    @property
    def event_types(self) -> dict[str, str]:
        """Event id → the ``event_type`` of the latest valid delivery of that event (a copy)."""
        return self._ledger.event_types()

    @property
    def arrivals(self) -> dict[str, dict[str, Any]]:
        """Event id → how the latest valid delivery of that event came (a copy).

        ``{"path": "/v1/telemetry/batch", "resource": {...}}`` for a batch,
        ``{"path": "/v1/uploads/stream", "system_info": {...}}`` for a stream
        upload; the identity is None when the request carried none.
        """
        return self._ledger.arrivals()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The latest ingest requests (up to 10,000), in the order they were answered.

        Each is ``{"path", "outcome", "arrived", "answered"}``: the endpoint, the
        status code as text (``"reset"`` when the connection was cut), and the Unix
        times the request line arrived and the answer (or the cut) was decided.
        """
        return self._ledger.requests()

    def stats(self) -> dict[str, Any]:
        """Counters of ingest requests, faults and events: what ``GET /mock/stats`` returns.

        Keys: ``requests_by_status`` (status code, or ``"reset"`` when the connection was
        cut, → count), ``requests_by_path`` (ingest endpoint → count), ``requests_total``,
        ``faults_injected`` (kind → count), ``events_received`` (distinct ids),
        ``duplicates_received`` (deliveries of an id already seen), ``event_deliveries``
        (all valid events recorded), ``event_deliveries_by_path`` (endpoint → count) and
        ``concurrent_requests_max`` (the most ingest requests handled at once, from
        arrival to answer: how many a client had in flight).
        Both endpoints count alike: an id first sent in a batch and again as a stream
        upload is one event delivered twice.
        """
        return self._ledger.stats()

    def reset(self) -> None:
        """Forget all events and counters, and restart the fault sequence from the seed."""
        with self._rng_lock:
            self._ledger.reset()
            self._rng = random.Random(self._seed)

    def _draw(self, faults: Faults) -> str | None:
        with self._rng_lock:
            kind = faults.draw(self._rng)
        if kind is not None:
            self._ledger.count_fault(kind)
        return kind

    def _authorized(self, header: str | None) -> bool:
        if self._api_key is None:
            return True
        scheme, _, token = (header or "").strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self._api_key
        )
