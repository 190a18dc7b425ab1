"""The JSON Lines exporter: every record appended to a file, one SPEC §2 event per line.

It sits at the end of the pipeline (record → process → export), installed by
``exporter="jsonl"`` (the file is ``export_file``) or passed in
``exporters=[...]``. Each line is the event envelope the server ingests
(``event_id``, ``event_type``, ``timestamp``, ``payload``) plus the ``resource``
of the emitting process, so a file can be read with ``jq`` or replayed to a
server as is.

The file is opened lazily in append mode (created ``0600``: spans may carry
prompts and user ids), with its parent folders. A batch is written with one
``write`` on an unbuffered descriptor, so it reaches the operating system at
once and lines from several processes appending to one file do not interleave
mid-line on local file systems. A forked child reopens the file instead of
sharing the parent's descriptor.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from tracerelay._diagnostics import internal_error, warn_once
from tracerelay.export import ExportResult
from tracerelay.serialization import dumps, envelope

__all__ = ["JsonLinesExporter"]

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_live: weakref.WeakSet[JsonLinesExporter] = weakref.WeakSet()


class JsonLinesExporter:
    """Appends each exported record to ``path`` as one JSON object per line.

    ``resource`` (the process's resource attributes) is added to every line
    under ``"resource"``. Later exports after ``shutdown()`` return FAILURE.
    Thread-safe.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, resource: Mapping[str, Any] | None = None
    ) -> None:
        self.path = os.path.abspath(os.fspath(path))
        # The envelope ends with "}": the resource is encoded once and spliced in before it.
        self._resource_tail = b',"resource":' + dumps(dict(resource or {})) + b"}\n"
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = os.getpid()
        self._stopped = False
        _live.add(self)

    def export(self, records: Sequence[Any]) -> ExportResult:
        """Append one line per record, in one write; FAILURE if the file cannot be written."""
        lines = []
        for record in records:
            try:
                lines.append(dumps(envelope(record))[:-1] + self._resource_tail)
            except Exception as exc:
                internal_error("jsonl.encode", exc)
        data = b"".join(lines)
        with self._lock:
            if self._stopped:
                return ExportResult.FAILURE
            try:
                if data:
                    self._write_all(self._open(), data)
            except OSError as exc:
                warn_once(
                    f"jsonl:{self.path}", "tracerelay: cannot write to %s: %s", self.path, exc
                )
                self._close()
                return ExportResult.FAILURE
        return ExportResult.SUCCESS if len(lines) == len(records) else ExportResult.FAILURE

    def force_flush(self, timeout: float | None = None) -> bool:
        """Nothing is buffered here (each batch was written whole): always True."""
        return True

    def shutdown(self) -> None:
        """Close the file; later exports are refused."""
        with self._lock:
            self._stopped = True
            self._close()

    def __repr__(self) -> str:
        return f"<JsonLinesExporter path={self.path!r}>"

    # The methods below run with the lock held.

    def _open(self) -> int:
        if self._fd is not None and self._pid != os.getpid():
            # A forked child: the descriptor is the parent's copy; let it go and reopen.
            self._close()
        if self._fd is None:
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            self._fd = os.open(self.path, _FLAGS, 0o600)
            self._pid = os.getpid()
        return self._fd

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            # One call in practice; a write cut short (a signal, a full pipe) is continued.
            written = os.write(fd, view)
            view = view[written:]

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def _after_fork_in_child() -> None:
    # Another thread may have held a lock at the fork; in the child that thread is
    # gone and the lock would stay taken forever, so every exporter gets a new one.
    for exporter in list(_live):
        exporter._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
