"""The client: one configuration, one resource, one pipeline and the tracer that feeds it.

``tracerelay.init()`` builds one and installs it process-wide; ``Client(...)``
builds a standalone one (several may coexist, each with its own exporters).
``ClientBase`` is everything but the pipeline's kind and the flush/shutdown
methods: ``Client`` drains on a thread and flushes by blocking,
``AsyncClient`` (``tracerelay.async_client``) drains on the event loop and
flushes with ``await``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tracerelay._diagnostics import warn_once
from tracerelay.announce import Announcer
from tracerelay.config import Config, make_config
from tracerelay.debuglog import configure_logging
from tracerelay.errors import TracerelayError
from tracerelay.export import Exporter
from tracerelay.ids import new_event_id
from tracerelay.overflow import Overflow
from tracerelay.pipeline import BackgroundPipeline, Pipeline, SyncPipeline
from tracerelay.processing import Processor, build_processors
from tracerelay.records import EVENT_TYPES, RawEvent, Record
from tracerelay.resource import detect_resource
from tracerelay.tracer import AnnouncingTracer, Tracer

if TYPE_CHECKING:
    from tracerelay.pending import Pending

__all__ = ["EVENT_TYPES", "Client", "ClientBase"]


def _default_exporters(config: Config, resource: Mapping[str, Any]) -> list[Exporter]:
    if config.exporter == "http":
        from tracerelay.export.http import HttpExporter

        return [HttpExporter(config, resource)]
    if config.exporter == "console":
        from tracerelay.export.console import ConsoleExporter

        return [ConsoleExporter()]
    if config.exporter == "jsonl":
        from tracerelay.export.jsonl import JsonLinesExporter

        return [JsonLinesExporter(config.export_file, resource=resource)]
    return []


class ClientBase:
    """Configuration, resource, pipeline and tracer for one destination; see ``Client``.

    Subclasses choose the pipeline (``_pipeline_class``) and how flush and
    shutdown are called; ``_flush_now`` / ``_shutdown_now`` block the calling
    thread, whatever the subclass (``tracerelay.flush()`` and exit use them).
    """

    # The queued pipeline's kind (``synchronous=True`` aside); AsyncClient drains on the loop.
    _pipeline_class: type[BackgroundPipeline] = BackgroundPipeline

    def __init__(
        self,
        *,
        exporters: Iterable[Exporter] | None = None,
        processors: Iterable[Processor] = (),
        synchronous: bool = False,
        **options: Any,
    ) -> None:
        self.config = make_config(**options)
        config = self.config
        configure_logging(config)
        self.resource = detect_resource(
            config.service,
            service_version=config.service_version,
            environment=config.environment,
            environ=options.get("environ"),
        )
        self.exporters = (
            list(exporters) if exporters is not None else _default_exporters(config, self.resource)
        )
        chain = build_processors(config, processors)
        self.pipeline: Pipeline
        tracing: dict[str, Any] = {
            "sample_rate": config.sample_rate,
            "capture_io": config.capture_io,
            "max_io_length": config.max_io_length,
        }
        # Long spans are announced in instant mode, from the background thread.
        self._announcer = (
            Announcer(config.announce_after, max_starts=config.max_queue_size)
            if config.mode == "instant" and not synchronous
            else None
        )
        if synchronous:
            self.pipeline = SyncPipeline(chain, self.exporters)
        else:
            background = self._pipeline_class(
                chain,
                self.exporters,
                max_queue_size=config.max_queue_size,
                batch_size=config.batch_max_size,
                flush_interval=config.batch_flush_interval,
                instant=config.mode == "instant",
                overflow=_overflow_for(self.exporters, config),
                announcer=self._announcer,
                pending=_pending_for(self.exporters),
            )
            if any(getattr(e, "pending_at_start", False) for e in self.exporters):
                # Records an earlier run kept at exit are processed now, not at the
                # first span (tracerelay.pending).
                background.start()
            if self._announcer is not None:
                # The first span may be a long one: the thread that announces must be there.
                background.start()
            self.pipeline = background
        self.tracer: Tracer
        if self._announcer is not None:
            self.tracer = AnnouncingTracer(self.pipeline.submit, self._announcer, **tracing)
        else:
            self.tracer = Tracer(self.pipeline.submit, **tracing)
        self._started = time.monotonic()
        # Kept so a forked child can build an identical client of its own.
        self._arguments = dict(
            options, exporters=exporters, processors=processors, synchronous=synchronous
        )

    def submit(self, record: Record) -> str:
        """Queue a record (score, event, metric, trace update); returns its event id."""
        if record.event_id is None:
            record.event_id = new_event_id(record.timestamp)
        self.pipeline.submit(record)
        return record.event_id

    def submit_batch_event(self, event_type: str, payload: Mapping[str, Any]) -> str:
        """Queue one event of any SPEC §2 type with ``payload`` as given; returns its ULID."""
        if event_type not in EVENT_TYPES:
            raise TracerelayError(
                f"unknown event_type {event_type!r}.",
                code="TR-EVENT-TYPE",
                fix="use one of: " + ", ".join(sorted(EVENT_TYPES)) + ".",
            )
        return self.submit(RawEvent(event_type, payload))

    def _flush_now(self, timeout: float | None = None) -> bool:
        """Export everything recorded so far, blocking this thread; True if done in time."""
        return self.pipeline.flush(timeout)

    def _shutdown_now(self, timeout: float | None = None) -> bool:
        """Flush within ``timeout`` (default ``shutdown_timeout``), blocking; release exporters."""
        if self._announcer is not None:
            self._announcer.close()
        return self.pipeline.shutdown(self._shutdown_timeout(timeout))

    def _shutdown_timeout(self, timeout: float | None) -> float:
        return self.config.shutdown_timeout if timeout is None else timeout

    def metrics(self) -> dict[str, Any]:
        """The SDK's own counters (SPEC §3), pipeline and delivery together.

        ``items_created`` counts records made (in instant mode a long span's
        announce is a record of its own); ``items_processed`` those that
        reached the server (with an HTTP exporter) or the exporters (without);
        ``items_dropped`` those lost, by reason in ``dropped_by_reason``;
        ``items_spooled`` those waiting on disk: batches the server has not taken
        yet, and records kept unprocessed at shutdown for the next start
        (``items_kept``, also counted in ``items_created``).
        ``requests_in_flight`` is how many requests to the server are out now
        and ``in_flight_limit`` how many may be (adaptive, from 1 to
        ``connection_pool_size``); both are 0 without an HTTP exporter.
        """
        stats = self.pipeline.stats()
        dropped = dict(stats["dropped"])
        kept = stats.get("kept", 0)
        # Records an earlier run kept and this one processed were not made here.
        restored = stats.get("restored", 0) + dropped.get("pending_unreadable", 0)
        created = stats["processed"] + sum(dropped.values()) + stats["queued"] + kept - restored
        uptime = max(time.monotonic() - self._started, 1e-9)
        metrics: dict[str, Any] = {
            "queue_depth": stats["queued"],
            "items_created": created,
            "items_processed": stats["processed"],
            "items_failed": stats["failed"],
            "items_dropped": sum(dropped.values()),
            "items_spooled": kept,
            "items_kept": kept,
            "duplicates": 0,
            "batches_processed": stats["batches"],
            "avg_batch_size": stats["processed"] / stats["batches"] if stats["batches"] else 0.0,
            "avg_response_ms": 0.0,
            "processing_rate": stats["processed"] / uptime,
            "error_rate": 0.0,
            "circuit_state": "disabled",
            "requests_in_flight": 0,
            "in_flight_limit": 0,
            "dropped_by_reason": dropped,
        }
        for exporter in self.exporters:
            delivery = getattr(exporter, "metrics", None)
            if not callable(delivery):
                continue
            sent = delivery()
            metrics["queue_depth"] += sent["queue_depth"]
            metrics["items_processed"] = sent["items_delivered"]
            metrics["items_failed"] += sent["items_failed"]
            if sent["items_dropped"]:
                dropped["delivery"] = sent["items_dropped"]
                metrics["items_dropped"] += sent["items_dropped"]
            metrics["items_spooled"] += sent["items_spooled"]
            for key in (
                "duplicates",
                "batches_processed",
                "avg_batch_size",
                "avg_response_ms",
                "error_rate",
                "circuit_state",
            ):
                metrics[key] = sent[key]
            for key in ("requests_in_flight", "in_flight_limit"):
                metrics[key] += sent.get(key, 0)
            metrics["processing_rate"] = sent["items_delivered"] / uptime
        return metrics

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"<{name} service={self.config.service!r} exporters={self.exporters!r}>"


class Client(ClientBase):
    """Configuration, resource, pipeline and tracer for one destination.

    Keyword arguments are the options of ``docs/configuration.md``; besides them,
    ``exporters`` replaces the configured exporter, ``processors`` are appended
    to the built-in chain, and ``synchronous=True`` processes and exports each
    record as it ends (tests, debugging) instead of on a background thread.
    For asyncio apps, ``AsyncClient`` takes the same arguments.
    """

    def flush(self, timeout: float | None = None) -> bool:
        """Export everything recorded so far; True if done within ``timeout`` seconds."""
        return self._flush_now(timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush within ``timeout`` (default ``shutdown_timeout``) and release exporters."""
        return self._shutdown_now(timeout)


def _pending_for(exporters: Iterable[Exporter]) -> Pending | None:
    """Where records the pipeline has not processed at exit are kept: the first
    exporter's spool, if any has one."""
    for exporter in exporters:
        spool = getattr(exporter, "spool", None)
        if spool is not None:
            # Imported here: only exporters with a spool (the HTTP one) need it.
            from tracerelay.delivery.spool import Spool
            from tracerelay.pending import Pending

            if isinstance(spool, Spool):
                return Pending(spool)
    return None


def _overflow_for(exporters: Iterable[Exporter], config: Config) -> Overflow | None:
    """An overflow file beside the first exporter's spool, if any has one."""
    for exporter in exporters:
        spool = getattr(exporter, "spool", None)
        directory = getattr(spool, "directory", None)
        if isinstance(directory, str):
            try:
                return Overflow(directory, max_bytes=config.spool_max_bytes)
            except OSError as exc:
                warn_once(
                    "overflow-unavailable",
                    "tracerelay: no overflow file in %s (%s); a queue beyond "
                    "max_queue_size drops its oldest records, counted",
                    directory,
                    exc,
                )
    return None
