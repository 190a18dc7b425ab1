"""Exporters: where finished records go once processed.

An exporter is an object with three methods:

- ``export(records) -> ExportResult``: take a batch (spans and other records,
  already processed, each with its ``event_id``); called from one thread at a
  time, never from traced code;
- ``force_flush(timeout) -> bool``: push out anything it buffers, within the deadline;
- ``shutdown()``: release files and connections; later exports are ignored.

The pipeline catches anything an exporter raises, so one broken exporter
cannot stop the others or reach the application. Built in: ``InMemoryExporter``
(tests), ``ConsoleExporter`` (a readable tree), ``JsonLinesExporter`` (a file).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["ExportResult", "Exporter"]


class ExportResult(enum.Enum):
    """What an exporter made of a batch."""

    SUCCESS = "success"
    FAILURE = "failure"


@runtime_checkable
class Exporter(Protocol):
    """The three methods every exporter has (see the module docstring)."""

    def export(self, records: Sequence[Any]) -> ExportResult:
        """Take one processed batch."""
        ...

    def force_flush(self, timeout: float | None = None) -> bool:
        """Push out what is buffered; True if done within ``timeout`` seconds."""
        ...

    def shutdown(self) -> None:
        """Release resources; later exports are ignored."""
        ...
