"""Records the pipeline cannot process yet, parked raw on disk.

When traced code makes spans faster than the pipeline thread can process and
encode them (a tight loop makes one in ~3 µs; validation, limits, redaction
and encoding take longer), the queue would grow without bound or drop. With
a spool configured, the pipeline thread instead moves the records beyond
``max_queue_size`` into this file, which costs about 1 µs a record (a pickle
of the span's fields, appended to a buffered file): far less than processing,
so the queue stays bounded whatever the rate. When the queue has room again,
the thread reads them back, oldest first, and processes them like any other —
nothing leaves the process unprocessed.

The file is anonymous (``tempfile.TemporaryFile`` in the spool directory:
unlinked at once, readable only through this process's descriptor), so the
unprocessed records, which may still hold secrets redaction has not removed
yet, never outlive the process or show up for anyone else. Only the pipeline
thread (or a flush holding the pipeline's export lock) touches it, so it needs
no lock of its own. It is bounded by ``max_bytes``; past that, records are
refused and the caller counts them dropped.

A frame is a 4-byte little-endian length and a pickle. Spans are pickled as
the tuple of their fields (``Span.state``); other records, rarer, whole. A
record that cannot be pickled (an attribute holding a lock, say) is refused
and stays in memory.
"""

from __future__ import annotations

import os
import pickle
import struct
import tempfile
from collections.abc import Iterable
from typing import Any

from tracerelay.spans import Span

__all__ = ["Overflow"]

_LENGTH = struct.Struct("<I")
_SPAN, _OTHER = 0, 1
_READ_CHUNK = 1 << 20


class Overflow:
    """An append-only file of parked records, read back oldest first."""

    def __init__(self, directory: str, *, max_bytes: int) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # Unbuffered: every ``park`` is one write at a known offset, so a forked child
        # holding a copy of the descriptor never flushes a stale buffer into the file.
        self._file = tempfile.TemporaryFile(  # noqa: SIM115 (owned until close())
            dir=directory, prefix=".overflow-", buffering=0
        )
        self.max_bytes = max_bytes
        self._written = 0  # bytes appended (buffered or not)
        self._disk_pos = 0  # bytes read from the file into ``_buffer``
        self._buffer = b""  # read from the file, not yet decoded
        self._count = 0
        self.parked_total = 0
        self.lost = 0

    def __len__(self) -> int:
        return self._count

    @property
    def size(self) -> int:
        """Bytes on disk not yet read back."""
        return self._written - self._disk_pos + len(self._buffer)

    def park(self, records: Iterable[Any]) -> list[Any]:
        """Append ``records``; returns those refused (unpicklable, or the file is full)."""
        refused: list[Any] = []
        frames: list[bytes] = []
        size = self.size
        records_list = list(records)
        for record in records_list:
            try:
                if type(record) is Span:
                    blob = pickle.dumps((_SPAN, record.state()), 5)
                else:
                    blob = pickle.dumps((_OTHER, record), 5)
            except Exception:
                refused.append(record)
                continue
            if size + len(blob) + 4 > self.max_bytes:
                refused.append(record)
                continue
            frames.append(_LENGTH.pack(len(blob)))
            frames.append(blob)
            size += len(blob) + 4
        if frames:
            data, start = b"".join(frames), self._written
            fd, view = self._file.fileno(), memoryview(data)
            try:
                while view:
                    view = view[os.pwrite(fd, view, start + len(data) - len(view)) :]
            except OSError:
                # Disk full, say: none of these is parked; the caller keeps them all.
                return records_list
            self._written = start + len(data)
            parked = len(frames) // 2
            self._count += parked
            self.parked_total += parked
        return refused

    def take(self, n: int) -> list[Any]:
        """Up to ``n`` parked records, oldest first, rebuilt."""
        out: list[Any] = []
        if not self._count:
            return out
        fd = self._file.fileno()
        buffer, offset = self._buffer, 0
        try:
            while len(out) < n and self._count:
                available = len(buffer) - offset
                need = 4 if available < 4 else 4 + _LENGTH.unpack_from(buffer, offset)[0]
                if available < need:
                    chunk = os.pread(fd, max(_READ_CHUNK, need - available), self._disk_pos)
                    if not chunk:
                        raise EOFError("the overflow file ends inside a record")
                    buffer, offset = buffer[offset:] + chunk, 0
                    self._disk_pos += len(chunk)
                    continue
                kind, value = pickle.loads(memoryview(buffer)[offset + 4 : offset + need])
                offset += need
                self._count -= 1
                out.append(Span.from_state(value) if kind == _SPAN else value)
        except Exception:
            # Only a failing disk gets here: what cannot be read back is lost, counted.
            self.lost += self._count
            self._count = 0
            raise
        finally:
            self._buffer = buffer[offset:]
            if not self._count:
                self._reset()
        return out

    def _reset(self) -> None:
        """Everything was read back: give the disk space back."""
        os.ftruncate(self._file.fileno(), 0)
        self._written = self._disk_pos = 0
        self._buffer = b""

    def close(self) -> None:
        """Forget what is parked (the file is anonymous: closing deletes it)."""
        self._count = 0
        self._file.close()
