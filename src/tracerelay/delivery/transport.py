"""HTTP to the tracerelay server: one keep-alive connection pool per client, via httpx.

The sender posts encoded batches through ``post_batch`` and single events
through ``post_stream``; the circuit breaker probes ``health``. Timeouts are
separate for connecting, reading, writing and waiting for a pooled connection:
a server that accepts connections but never answers is cut off by the read
timeout, not left to hang. Failures come back as exceptions of httpx's
``TransportError`` family, which ``policy.classify_error`` turns into retries.

The pool is never shared across ``fork``: a forked child builds its own client
(see ``tracerelay.api``), so two processes never write to one socket.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from tracerelay._version import __version__
from tracerelay.delivery.encoding import EncodedBatch
from tracerelay.serialization import dumps

__all__ = ["BATCH_PATH", "HEALTH_PATH", "STREAM_PATH", "HttpTransport"]

BATCH_PATH = "/v1/telemetry/batch"
STREAM_PATH = "/v1/uploads/stream"
HEALTH_PATH = "/health"
_CONNECT_TIMEOUT_MAX = 5.0


class HttpTransport:
    """Posts to one tracerelay server. Safe to use from several threads at once."""

    def __init__(
        self,
        endpoint: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        pool_size: int = 10,
        keep_alive: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": f"tracerelay-python/{__version__}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # Connecting to a live server takes milliseconds; waiting the full read timeout
        # for a connect would only delay the fallback to the spool during an outage.
        connect = min(timeout, _CONNECT_TIMEOUT_MAX)
        self._client = httpx.Client(
            base_url=endpoint,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect, pool=timeout),
            limits=httpx.Limits(
                max_connections=pool_size,
                max_keepalive_connections=pool_size if keep_alive else 0,
            ),
            transport=transport,
        )

    def post_batch(self, batch: EncodedBatch) -> httpx.Response:
        """POST one batch body; raises httpx's transport errors on failure."""
        return self._client.post(BATCH_PATH, content=batch.body, headers=batch.headers)

    def post_stream(self, event: bytes, system_info: Mapping[str, Any]) -> httpx.Response:
        """POST one event to the stream endpoint (instant mode, one event at a time)."""
        body = b'{"event":' + event + b',"system_info":' + dumps(dict(system_info)) + b"}"
        return self._client.post(
            STREAM_PATH, content=body, headers={"Content-Type": "application/json"}
        )

    def health(self) -> bool:
        """True when ``GET /health`` answers 200: the circuit breaker's cheap probe."""
        try:
            return self._client.get(HEALTH_PATH).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        """Close pooled connections."""
        self._client.close()
