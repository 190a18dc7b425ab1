"""The server's own Prometheus metrics (``GET /metrics``), one registry per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ServerMetrics"]


class ServerMetrics:
    """Ingest rate, batch sizes, latency, dedup hits, queue depth, storage errors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "tracerelay_events_ingested", "Events stored, by endpoint.", ["endpoint"], registry=r
        )
        self.duplicates = Counter(
            "tracerelay_duplicate_events", "Events already stored (dedup hits).", registry=r
        )
        self.batch_size = Histogram(
            "tracerelay_batch_events", "Events per batch request.", registry=r,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
        )  # fmt: skip
        self.latency = Histogram(
            "tracerelay_ingest_seconds", "Ingest request latency.", ["endpoint"], registry=r
        )
        self.queue_depth = Gauge(
            "tracerelay_write_queue_events", "Events waiting for a commit.", registry=r
        )
        self.storage_errors = Counter(
            "tracerelay_storage_errors", "Writes the database refused.", registry=r
        )
        self.shed = Counter(
            "tracerelay_requests_shed", "Requests answered 503 because the queue was full.",
            registry=r,
        )  # fmt: skip
