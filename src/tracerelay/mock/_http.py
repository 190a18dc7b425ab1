"""The mock server's HTTP side: routing, fault injection and connection handling.

Standard library only: an ``http.server`` that gives each connection its own
daemon thread, at most ``max_connections`` at once (further connections wait
in the listen backlog). Connections stay open between requests (HTTP/1.1
keep-alive), as the SDK's pooled client expects. ``disconnect_all`` lets
``MockServer.stop()`` close every open connection, so a client sees an outage
rather than a stopped server still answering on a pooled connection. The
handler reads its settings and state from the ``MockServer`` that owns it.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from tracerelay._version import __version__
from tracerelay.mock._faults import Faults
from tracerelay.mock._ingest import (
    BATCH_PATH,
    STREAM_PATH,
    RequestError,
    decode_body,
    error_body,
    handle_batch,
    handle_stream,
    parse_json,
)

if TYPE_CHECKING:
    from tracerelay.mock._server import MockServer

__all__ = ["BATCH_PATH", "POLL_INTERVAL_S", "STREAM_PATH", "MockHTTPServer"]

_Request = socket.socket | tuple[bytes, socket.socket]

_GET_PATHS = frozenset({"/health", "/mock/stats", "/mock/events", "/mock/faults"})
_POST_PATHS = frozenset({BATCH_PATH, STREAM_PATH, "/mock/reset", "/mock/faults"})
_IDLE_TIMEOUT_S = 30.0
_EVICT_GRACE_S = 0.25
POLL_INTERVAL_S = 0.05
_CONTROL_BODY_LIMIT = 64 * 1024
# Reading and dropping an oversized body keeps the connection usable and lets the
# client read the 413; past this much, hanging up is cheaper.
_DRAIN_LIMIT = 64 * 1024 * 1024
_CHUNK = 64 * 1024
_LENGTH = re.compile(r"[0-9]{1,15}")
# struct linger {on, seconds}: on with 0 s makes close() send RST instead of FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)
_STATUS_FAULTS: dict[str, tuple[int, str, str]] = {
    "413": (413, "payload_too_large", "send smaller batches"),
    "429": (429, "rate_limited", "wait for Retry-After, then resend"),
    "500": (500, "internal_error", "resend with backoff"),
    "503": (503, "unavailable", "wait for Retry-After, then resend"),
}


def _resets_on_close(sock: socket.socket) -> bool:
    try:
        linger = sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, len(_LINGER_RESET))
    except OSError:
        return False
    return linger == _LINGER_RESET


def _shut(sock: socket.socket) -> None:
    # shutdown(), unlike close(), wakes the connection's thread blocked in recv().
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class MockHTTPServer(HTTPServer):
    """The listening socket and its connection threads, for one run of a ``MockServer``."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self, mock: MockServer, address: tuple[str, int], family: int, max_connections: int
    ) -> None:
        self.address_family = family
        self.mock = mock
        self.stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._live: dict[socket.socket, threading.Thread] = {}
        # Connections waiting for their next request, with the time they started waiting.
        self._idle: dict[socket.socket, float] = {}
        self._live_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN: a DNS round trip per start, unused.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.socket.getsockname()[1])

    def process_request(self, request: _Request, client_address: Any) -> None:
        # At the cap, stop accepting: new connections queue in the kernel's backlog.
        while not self._slots.acquire(timeout=POLL_INTERVAL_S):
            if self.stopping.is_set():
                self.shutdown_request(request)
                return
            self._evict_idle()
        thread = threading.Thread(
            target=self._serve,
            args=(request, client_address),
            name=f"tracerelay-mock-connection:{self.server_port}",
            daemon=True,
        )
        if isinstance(request, socket.socket):
            with self._live_lock:
                self._live[request] = thread
        thread.start()

    def _serve(self, request: _Request, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            # Forget the socket before closing it: other threads shut down only sockets
            # they find in _live under the lock, so none can hit a closed (reused) fd.
            if isinstance(request, socket.socket):
                with self._live_lock:
                    self._live.pop(request, None)
                    self._idle.pop(request, None)
            self.shutdown_request(request)
            self._slots.release()

    def set_idle(self, sock: socket.socket, idle: bool) -> None:
        """Mark a connection as waiting for its next request (evictable) or busy."""
        with self._live_lock:
            if not idle:
                self._idle.pop(sock, None)
            elif sock in self._live:
                self._idle[sock] = time.monotonic()

    def _evict_idle(self) -> None:
        # Pooled clients keep idle connections open; at the cap they would hold every
        # thread and starve new clients, so the longest-idle one is closed, as busy
        # HTTP servers do with keep-alive connections. The grace period keeps a client
        # that is between two requests from racing the close (rarely, not never).
        with self._live_lock:
            if not self._idle:
                return
            oldest = min(self._idle, key=self._idle.__getitem__)
            if time.monotonic() - self._idle[oldest] < _EVICT_GRACE_S:
                return
            del self._idle[oldest]
            _shut(oldest)

    def shutdown_request(self, request: _Request) -> None:
        # The usual shutdown(SHUT_WR) would send a FIN before the RST an abort asked for.
        if isinstance(request, socket.socket) and _resets_on_close(request):
            self.close_request(request)
        else:
            super().shutdown_request(request)

    def handle_error(self, request: _Request, client_address: Any) -> None:
        # Clients vanishing mid-request is routine for a fault injector; anything else is a bug.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def disconnect_all(self) -> list[threading.Thread]:
        """Shut every open connection down; returns their threads, to join."""
        with self._live_lock:
            for sock in self._live:
                _shut(sock)
            return list(self._live.values())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"tracerelay-mock/{__version__}"
    timeout = _IDLE_TIMEOUT_S
    # Headers and body leave in two writes; with Nagle on, the body would wait for the
    # client's delayed ACK (about 40 ms a request).
    disable_nagle_algorithm = True
    server: MockHTTPServer
    _counted: str | None = None  # the ingest path of a request not counted yet
    _arrived: float | None = None  # when that request arrived (Unix time)

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet: the counters in /mock/stats are the log.
        return

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server answers malformed requests itself, some with 501 or 505: bad input
        # never gets a 5xx from this server, and every error body is JSON.
        if code >= 500:
            code = 405 if code == HTTPStatus.NOT_IMPLEMENTED else 400
        # An unparsable request line leaves the version at HTTP/0.9, which would send the
        # body without a status line; every client worth testing speaks HTTP/1.x.
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.1"
        phrase = HTTPStatus(code).phrase
        self.close_connection = True
        self._send_json(
            code,
            error_body(
                re.sub(r"\W+", "_", phrase.lower()),
                message or phrase,
                "send a well-formed HTTP/1.1 request to an endpoint of SPEC §2",
            ),
        )

    def handle_one_request(self) -> None:
        self.server.set_idle(self.connection, True)
        super().handle_one_request()

    def parse_request(self) -> bool:
        self.server.set_idle(self.connection, False)
        return super().parse_request()

    def _send_json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        # Counted before sending: a client that has its answer must find it in the stats.
        self._count(str(status))
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_error(self, status: int, code: str, message: str, fix: str) -> None:
        self._send_json(status, error_body(code, message, fix))

    def _count(self, outcome: str) -> None:
        if self._counted is not None:
            self.server.mock._ledger.count_request(outcome, self._counted, self._arrived)
            self._counted = self._arrived = None

    def _abort(self) -> None:
        self.close_connection = True
        self._count("reset")
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass

    # -- bodies ------------------------------------------------------------------

    def _content_length(self) -> int | None:
        """The announced body size, or None after answering a request that cannot be framed."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._send_error(
                411, "length_required", "chunked bodies are not accepted", "send Content-Length"
            )
            return None
        text = self.headers.get("Content-Length")
        if text is None:
            return 0
        if not _LENGTH.fullmatch(text.strip()):
            self.close_connection = True
            self._send_error(
                400, "invalid_content_length", f"bad Content-Length {text!r}", "send a byte count"
            )
            return None
        return int(text)

    def _discard(self, length: int) -> bool:
        if length > _DRAIN_LIMIT:
            self.close_connection = True
            return True
        while length > 0:
            chunk = self.rfile.read(min(length, _CHUNK))
            if not chunk:
                self.close_connection = True
                return False
            length -= len(chunk)
        return True

    def _discard_body(self) -> bool:
        length = self._content_length()
        return length is not None and self._discard(length)

    def _read_body(self, limit: int) -> bytes | None:
        length = self._content_length()
        if length is None:
            return None
        if length > limit:
            if self._discard(length):
                self._send_error(
                    413,
                    "payload_too_large",
                    f"the body is {length} bytes; this server takes at most {limit}",
                    "send smaller batches",
                )
            return None
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True  # the client hung up mid-body: nobody to answer
            return None
        return body

    # -- routes ------------------------------------------------------------------

    def _route_missing(self, path: str, allowed: frozenset[str]) -> bool:
        if path in allowed:
            return False
        if self._discard_body():
            if path in _GET_PATHS | _POST_PATHS:
                self._send_error(
                    405, "method_not_allowed", f"{self.command} {path} is not served", "see SPEC §2"
                )
            else:
                self._send_error(404, "not_found", f"no endpoint at {path}", "see SPEC §2")
        return True

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if self._route_missing(path, _GET_PATHS) or not self._discard_body():
            return
        mock = self.server.mock
        if path == "/health":
            self._send_json(200, {"status": "ok"})
        elif path == "/mock/stats":
            self._send_json(200, mock.stats())
        elif path == "/mock/events":
            self._send_json(200, mock.received)
        else:
            self._send_json(200, mock.faults.as_dict())

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if self._route_missing(path, _POST_PATHS):
            return
        if path in (BATCH_PATH, STREAM_PATH):
            self._counted, self._arrived = path, time.time()
            ledger = self.server.mock._ledger
            ledger.request_started()
            try:
                self._ingest(path)
            finally:
                ledger.request_ended()
        elif path == "/mock/reset":
            if self._discard_body():
                self.server.mock.reset()
                self._send_json(200, {"status": "reset"})
        else:
            self._set_faults()

    def _set_faults(self) -> None:
        body = self._read_body(_CONTROL_BODY_LIMIT)
        if body is None:
            return
        try:
            data = parse_json(body)
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object of fault settings")
            faults = Faults.from_mapping(data)
        except RequestError as exc:
            self._send_json(exc.status, exc.body)
        except ValueError as exc:
            self._send_error(400, "invalid_faults", str(exc), 'send e.g. {"rate_429": 0.1}')
        else:
            self.server.mock.set_faults(faults)
            self._send_json(200, faults.as_dict())

    def _ingest(self, path: str) -> None:
        mock = self.server.mock
        if not mock._authorized(self.headers.get("Authorization")):
            if self._discard_body():
                self._send_error(
                    401,
                    "unauthorized",
                    "missing or wrong api key",
                    "send Authorization: Bearer <the key the mock server was started with>",
                )
            return
        body = self._read_body(mock.max_body_bytes)
        if body is None:
            return
        faults = mock.faults
        fault = mock._draw(faults)
        if faults.latency and self.server.stopping.wait(faults.latency):
            self._abort()  # stopped meanwhile: cut off, as a slow reply is
            return
        if fault in _STATUS_FAULTS:
            self._send_fault(fault, faults)
            return
        if fault == "reset":
            self._abort()
            return
        handle = handle_batch if path == BATCH_PATH else handle_stream
        try:
            raw = decode_body(
                body, self.headers.get("Content-Encoding"), mock.max_decompressed_bytes
            )
            status, answer = handle(mock._ledger, parse_json(raw))
        except RequestError as exc:
            status, answer = exc.status, exc.body
        if mock.upstream is not None:
            forwarded = self._forward(mock.upstream + path, body)
            if forwarded is None:
                self._abort()  # the upstream is unreachable: as a reset, so the client retries
                return
            status, answer = forwarded
        # A slow reply is cut off, not sent late, when the server stops meanwhile.
        if fault == "lost_reply" or (
            fault == "slow" and self.server.stopping.wait(faults.slow_seconds)
        ):
            self._abort()
            return
        self._send_json(status, answer)

    def _forward(self, url: str, body: bytes) -> tuple[int, Any] | None:
        """POST ``body`` upstream with the request's auth and content headers; its answer,
        or None when it cannot be reached."""
        headers = {
            name: value
            for name in ("Authorization", "Content-Type", "Content-Encoding")
            if (value := self.headers.get(name)) is not None
        }
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=30.0)
        except httpx.HTTPError:
            return None
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {"error": "upstream", "message": response.text[:500]}

    def _send_fault(self, fault: str, faults: Faults) -> None:
        status, code, fix = _STATUS_FAULTS[fault]
        headers = {"X-Tracerelay-Mock-Fault": fault}
        if status in (429, 503):
            if faults.retry_after_http_date:
                # Rounded up: an HTTP date has whole seconds, and the wait must not come out short.
                when = math.ceil(time.time() + faults.retry_after)
                headers["Retry-After"] = email.utils.formatdate(when, usegmt=True)
            else:
                headers["Retry-After"] = f"{faults.retry_after:g}"
        message = f"injected fault: {HTTPStatus(status).phrase} (rate_{fault})"
        self._send_json(status, error_body(code, message, fix), headers)
