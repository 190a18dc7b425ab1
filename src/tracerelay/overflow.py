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

import io
import os
import pickle
import struct
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

from tracerelay.ids import new_event_ids
from tracerelay.spans import Span

__all__ = ["FrameReader", "Overflow", "frames_of"]

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
        """Append ``records``; returns those refused (unpicklable, or the file is full).

        Each record gets its event id here if it has none yet, so a record that is
        parked, kept at exit and processed by the next run keeps one id throughout.
        """
        records_list = list(records)
        frames, refused = frames_of(records_list, self.max_bytes - self.size)
        if frames:
            data, start = frames, self._written
            fd, view = self._file.fileno(), memoryview(data)
            try:
                while view:
                    view = view[os.pwrite(fd, view, start + len(data) - len(view)) :]
            except OSError:
                # Disk full, say: none of these is parked; the caller keeps them all.
                return records_list
            self._written = start + len(data)
            parked = len(records_list) - len(refused)
            self._count += parked
            self.parked_total += parked
        return refused

    def rest(self) -> tuple[int, bytes]:
        """``(count, frames)`` of every parked record not yet taken, and forget them."""
        count = self._count
        unread = self._written - self._disk_pos
        data = self._buffer
        if unread:
            data += os.pread(self._file.fileno(), unread, self._disk_pos)
        self._count = 0
        self._reset()
        return count, data

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
                out.append(_rebuild(kind, value))
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


def frames_of(records: Sequence[Any], max_bytes: int) -> tuple[bytes, list[Any]]:
    """The frames of ``records``, up to ``max_bytes`` of them, and the records refused
    (unpicklable, or past the limit). Records without an event id get one first."""
    unnamed = [r for r in records if getattr(r, "event_id", "") is None]
    for record, event_id in zip(unnamed, new_event_ids(len(unnamed)), strict=True):
        record.event_id = event_id
    refused: list[Any] = []
    frames: list[bytes] = []
    size = 0
    for record in records:
        try:
            if type(record) is Span:
                blob = pickle.dumps((_SPAN, record.state()), 5)
            else:
                blob = pickle.dumps((_OTHER, record), 5)
        except Exception:
            refused.append(record)
            continue
        if size + len(blob) + 4 > max_bytes:
            refused.append(record)
            continue
        frames.append(_LENGTH.pack(len(blob)))
        frames.append(blob)
        size += len(blob) + 4
    return b"".join(frames), refused


class FrameReader:
    """The records of ``frames_of`` output from a file another run wrote, read in order.

    The file may have been changed by someone else, so frames are unpickled with
    only the types a record holds allowed (``_SafeUnpickler``): a frame naming
    anything else, or damaged, is skipped and counted in ``unreadable``; frames
    cut short end the reading (counted too).
    """

    def __init__(self, count: int, data: bytes) -> None:
        self._data = data
        self._offset = 0
        self.left = count  # records not yet read, as the file declares
        self.unreadable = 0

    def take(self, n: int) -> list[Any]:
        """Up to ``n`` more records; fewer (or none) once the frames end."""
        data = self._data
        out: list[Any] = []
        while len(out) < n and self.left > 0:
            offset = self._offset
            fits = offset + 4 <= len(data)
            end = offset + 4 + _LENGTH.unpack_from(data, offset)[0] if fits else len(data) + 1
            if end > len(data):
                self.unreadable += self.left  # declared, but not there
                self.left = 0
                break
            self._offset, self.left = end, self.left - 1
            try:
                kind, value = _SafeUnpickler(io.BytesIO(data[offset + 4 : end])).load()
                out.append(_rebuild(kind, value))
            except Exception:
                self.unreadable += 1
        return out

    def rest(self) -> tuple[int, bytes]:
        """``(count, frames)`` not read yet, to be kept again as they are."""
        return self.left, self._data[self._offset :] if self.left else b""


# The types a parked record may hold: tracerelay's records, and the standard types
# attribute values and payloads commonly carry. Anything else named in a file from disk
# is refused rather than imported (unpickling may call what it names).
_SAFE_TYPES = {
    "builtins": {"set", "frozenset", "complex", "bytearray", "slice", "range"},
    "collections": {"OrderedDict", "defaultdict", "deque", "Counter"},
    "datetime": {"date", "time", "datetime", "timedelta", "timezone"},
    "decimal": {"Decimal"},
    "fractions": {"Fraction"},
    "uuid": {"UUID", "SafeUUID"},
    "tracerelay.records": {"Score", "Event", "MetricPoint", "TraceUpdate", "RawEvent"},
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name not in _SAFE_TYPES.get(module, ()):
            raise pickle.UnpicklingError(f"{module}.{name} is not a type a record holds")
        return super().find_class(module, name)


def _rebuild(kind: int, value: Any) -> Any:
    return Span.from_state(value) if kind == _SPAN else value
