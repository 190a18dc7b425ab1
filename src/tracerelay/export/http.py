"""The HTTP exporter: processed records to the tracerelay server, through the sender.

``export`` encodes each record once (its event id already fixed) and hands the
events to the ``Sender`` (``tracerelay.delivery.sender``), which owns the
network, the retries and the spool; ``force_flush`` waits for delivery;
``shutdown`` (after the pipeline's flush) spools whatever is still unsent.

The default spool directory is ``$XDG_CACHE_HOME/tracerelay/spool`` (else
``~/.cache/...``) plus a folder per service and endpoint: the processes of one
service share it, and adopt each other's batches after a crash, but a
different service on the same host never sends another's data with its key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from tracerelay._diagnostics import internal_error, warn_once
from tracerelay.config import Config
from tracerelay.delivery.aimd import Aimd
from tracerelay.delivery.breaker import CircuitBreaker
from tracerelay.delivery.encoding import Encoder, encode_event
from tracerelay.delivery.policy import Backoff
from tracerelay.delivery.sender import Sender
from tracerelay.delivery.spool import Spool
from tracerelay.delivery.transport import HttpTransport
from tracerelay.errors import TracerelayError
from tracerelay.export import ExportResult

__all__ = ["HttpExporter", "default_spool_dir"]

_BACKOFF_CAP_S = 60.0
_CLOSE_GRACE_S = 0.2


def default_spool_dir(service: str, endpoint: str) -> str:
    """Where a service's spool lives unless ``spool_dir`` says otherwise."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    tag = hashlib.sha256(endpoint.encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in service)[:64]
    return os.path.join(base, "tracerelay", "spool", f"{safe}-{tag}")


class HttpExporter:
    """Sends records to ``config.endpoint``; see the module docstring."""

    def __init__(
        self,
        config: Config,
        resource: Mapping[str, Any],
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config
        self.spool = _open_spool(config)
        if config.adaptive_batching:
            initial = min(max(config.batch_max_size, config.min_batch_size), config.max_batch_size)
            # Additive steps of 1/16 of the range: from the initial size to the largest
            # within a few dozen full batches when a backlog builds.
            step = max(1, (config.max_batch_size - config.min_batch_size) // 16)
            batch_size = Aimd(
                minimum=config.min_batch_size,
                maximum=config.max_batch_size,
                initial=initial,
                step=step,
            )
        else:
            batch_size = Aimd(minimum=config.batch_max_size, maximum=config.batch_max_size)
        breaker = (
            CircuitBreaker(config.failure_threshold, config.recovery_timeout)
            if config.circuit_breaker_enabled
            else None
        )
        dedup = {
            "enabled": config.batch_enable_deduplication,
            "ttl": config.batch_deduplication_ttl,
            "fail_on_duplicate": config.batch_fail_on_duplicate,
        }
        self.sender = Sender(
            HttpTransport(
                config.endpoint,
                api_key=config.api_key,
                timeout=config.timeout,
                pool_size=config.connection_pool_size,
                keep_alive=config.keep_alive,
                transport=transport,
            ),
            Encoder(
                resource,
                environment=config.environment,
                deduplication=dedup,
                compression=config.compression,
                threshold=config.compression_threshold,
                min_size=config.compression_min_size,
            ),
            batch_size=batch_size,
            backoff=Backoff(config.retry_backoff, cap=max(_BACKOFF_CAP_S, config.retry_backoff)),
            max_retries=config.max_retries,
            max_queue_bytes=config.max_queue_bytes,
            max_in_flight=config.connection_pool_size,
            spool=self.spool,
            breaker=breaker,
            durable=config.durability == "disk",
            stream=config.mode == "instant" and config.instant_endpoint == "stream",
        )
        self._stopped = False
        batches, raw = (False, False) if self.spool is None else _leftovers(self.spool.directory)
        # Records an earlier run kept unprocessed at exit (tracerelay.pending): the
        # client starts its pipeline at once when there are some.
        self.pending_at_start = raw
        if batches:
            # Batches left by an earlier run (this process's or a crashed one's) are
            # replayed at start, not only when new spans happen to arrive.
            self.sender.start()

    def export(self, records: Sequence[Any]) -> ExportResult:
        """Encode the batch and hand it to the sender; never waits on the network."""
        if self._stopped:
            return ExportResult.FAILURE
        events = []
        for record in records:
            try:
                events.append(encode_event(record))
            except Exception as exc:
                internal_error("http.encode", exc)
        self.sender.enqueue(events)
        return ExportResult.SUCCESS if len(events) == len(records) else ExportResult.FAILURE

    def backlogged(self) -> bool:
        """True while the sender holds more than it should take in (see the pipeline)."""
        return self.sender.backlogged()

    def force_flush(self, timeout: float | None = None) -> bool:
        """True once everything exported so far, spool included, reached the server."""
        return self.sender.flush(timeout)

    def shutdown(self) -> None:
        """Stop sending; what did not leave goes to the spool, for the next start.

        The pipeline flushes within its deadline (``shutdown_timeout`` at exit)
        before it calls this, so only a brief grace is left here: the whole exit
        stays within that one deadline.
        """
        if self._stopped:
            return
        self._stopped = True
        self.sender.close(_CLOSE_GRACE_S)
        if self.spool is not None:
            self.spool.close()

    def metrics(self) -> dict[str, Any]:
        """The sender's delivery counters."""
        return self.sender.metrics()

    def __repr__(self) -> str:
        return f"<HttpExporter endpoint={self.config.endpoint!r}>"


def _leftovers(directory: str) -> tuple[bool, bool]:
    """Whether ``directory`` holds batch files, and pending (``.raw``) files."""
    try:
        names = os.listdir(directory)
    except OSError:
        return False, False
    return any(n.endswith(".batch") for n in names), any(n.endswith(".raw") for n in names)


def _open_spool(config: Config) -> Spool | None:
    directory = config.spool_dir or default_spool_dir(config.service, config.endpoint)
    try:
        return Spool(directory, max_bytes=config.spool_max_bytes)
    except TracerelayError as exc:
        warn_once(
            "spool-unavailable",
            "tracerelay: no disk spool (%s); undeliverable batches will be dropped, counted",
            exc,
        )
        return None
