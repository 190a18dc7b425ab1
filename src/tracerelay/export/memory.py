"""An exporter that keeps every record in a list: for tests and for ``tracerelay.testing``."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from tracerelay.announce import SpanStart
from tracerelay.export import ExportResult
from tracerelay.spans import Span

__all__ = ["InMemoryExporter"]


class InMemoryExporter:
    """Collects exported records in memory, in export order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[Any] = []
        self._stopped = False

    def export(self, records: Sequence[Any]) -> ExportResult:
        """Append the batch; ignored after ``shutdown()``."""
        with self._lock:
            if self._stopped:
                return ExportResult.FAILURE
            self._records.extend(records)
        return ExportResult.SUCCESS

    @property
    def records(self) -> list[Any]:
        """A copy of every record exported so far."""
        with self._lock:
            return list(self._records)

    @property
    def spans(self) -> list[Span]:
        """A copy of the exported spans only (finished ones: announces are in ``records``)."""
        with self._lock:
            return [r for r in self._records if isinstance(r, Span) and type(r) is not SpanStart]

    def clear(self) -> None:
        """Forget what was exported."""
        with self._lock:
            self._records.clear()

    def force_flush(self, timeout: float | None = None) -> bool:
        """Nothing is buffered: always True."""
        return True

    def shutdown(self) -> None:
        """Stop accepting batches."""
        with self._lock:
            self._stopped = True
