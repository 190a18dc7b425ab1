"""Records an exit could not process, kept in the spool and processed at the next start.

At shutdown the pipeline flushes within its deadline. Whatever it has not
reached by then — records still in its queue and those parked in the overflow
file — has not been through the processors yet (validation, limits,
redaction) and has no encoded form. Processing it now would take seconds for a
large backlog (~5 µs a record) and overrun the deadline, so ``keep`` writes it
raw instead, in the overflow file's frames (a pickle of each record's fields,
~1.5 µs a record; a whole overflow file is copied as it is): one ``.raw`` file
in the spool directory, written atomically, ``0600``, checksummed.

At the next start of an app with the same spool (or in any process of the
service that adopts a dead process's files), the pipeline thread takes these
records back with ``take`` when its own queue is empty, processes them like
new ones and exports them; the file is removed once its last records have been
exported. Each record got its event id before it was first written, so one
processed twice (a crash between the last export and the removal) is dropped
by the server's deduplication.

A pending file holds data redaction has not seen: it never leaves this user's
spool directory, and only the types a record can hold are read back from it
(``overflow.FrameReader``). A frame that cannot be read is skipped, counted
(``unreadable``) and warned about once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tracerelay._diagnostics import internal_error, warn_once
from tracerelay.delivery.spool import Spool, SpoolEntry
from tracerelay.overflow import FrameReader, Overflow, frames_of

__all__ = ["Pending"]


class Pending:
    """The pending files of one spool owner; used only under the pipeline's export lock."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._adopted = False
        self._entry: SpoolEntry | None = None  # the file being processed
        self._reader: FrameReader | None = None
        self.kept = 0  # records written at shutdown
        self.restored = 0  # records read back
        self.unreadable = 0

    def __bool__(self) -> bool:
        """Whether records wait to be taken (no disk access)."""
        return self._reader is not None or self.spool.has_pending()

    def adopt(self) -> None:
        """Take over the pending files (and batches) of dead processes, once."""
        if self._adopted:
            return
        self._adopted = True
        try:
            self.spool.adopt_orphans()
        except Exception as exc:
            internal_error("pending.adopt", exc)

    def take(self, n: int) -> list[Any]:
        """Up to ``n`` records from the pending files, oldest file first.

        A file is removed at the call after the one that took its last records:
        by then the pipeline has exported them.
        """
        out: list[Any] = []
        while len(out) < n:
            if self._reader is not None and self._reader.left == 0:
                self._finish()
            if self._reader is None and not self._open_next():
                break
            assert self._reader is not None
            records = self._reader.take(n - len(out))
            self.restored += len(records)
            out.extend(records)
        return out

    def keep(self, records: Sequence[Any], overflow: Overflow | None) -> tuple[int, int]:
        """Write every record not processed yet — the rest of the file being processed,
        the overflow file's and ``records`` — into one pending file.

        Returns ``(kept, lost)``: how many are on disk now, and how many could not
        be (unpicklable, or the write failed), for the caller to count as dropped.
        """
        parts: list[bytes] = []
        count = in_file = 0
        if self._reader is not None:
            in_file, data = self._reader.rest()
            parts.append(data)
        if overflow is not None and len(overflow):
            parked, data = overflow.rest()
            count += parked
            parts.append(data)
        frames, refused = frames_of(records, 1 << 62)
        count += len(records) - len(refused)
        parts.append(frames)
        if count + in_file and not self.spool.write_pending(count + in_file, b"".join(parts)):
            # The file being processed stays on disk, read again in full at the next
            # start (what it already gave is dropped then by the server as repeats).
            return 0, count + len(refused)
        self._finish()  # its rest, if any, is in the new file now
        self.kept += count + in_file
        return count + in_file, len(refused)

    def _open_next(self) -> bool:
        for entry in self.spool.pending():
            data = self.spool.read_pending(entry)  # None: gone or corrupt (set aside, warned)
            if data is None:
                continue
            self._entry, self._reader = entry, FrameReader(entry.event_count, data)
            return True
        return False

    def _finish(self) -> None:
        """Remove the file being processed (all its records exported, or kept anew)."""
        reader, entry = self._reader, self._entry
        self._reader = self._entry = None
        if reader is None or entry is None:
            return
        if reader.unreadable:
            self.unreadable += reader.unreadable
            warn_once(
                "pending-unreadable",
                "tracerelay: %d records kept at an earlier exit could not be read back "
                "from %s and were skipped (a damaged file, or a value of a type tracerelay "
                "does not restore); see items_dropped",
                reader.unreadable,
                entry.path,
            )
        self.spool.remove(entry)
