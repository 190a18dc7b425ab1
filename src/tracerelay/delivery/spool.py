"""The durable spool: batches that could not be delivered, kept on disk until they are replayed.

Where it sits: processed batch → HTTP exporter → on a failed send, an outage or
an open breaker (or before sending, with ``durability="disk"``) → ``write`` →
later, when the server answers again or the next process starts, ``entries`` →
``read`` → send → ``remove``. Several processes may share one directory.

The directory (created ``0700``; local file systems only, as liveness rests on ``flock``):

- ``<owner>.lock``: held with an exclusive ``flock`` by the live ``Spool`` of that
  owner for its whole life. The kernel drops the lock when the process dies,
  however it dies, so a lock that can be taken means its owner is gone.
- ``<created_ns:020d>-<owner>-<seq>-<events>.batch``: one batch. Names sort in
  creation order and carry owner and event count, so eviction and
  ``inspect_spool`` never open a batch. Each is written to ``.<owner>.<seq>.tmp``,
  fsynced and renamed, so a ``.batch`` name always holds a whole file.
- ``<created_ns:020d>-<owner>-<seq>-<records>.raw``: records the owner had not
  processed when it exited (``write_pending``; ``tracerelay.pending``), owned,
  adopted and set aside like batches, processed by the owner's next pipeline.
- ``corrupt/``: files that failed their checks, set aside (the newest 100 kept).

A batch file is a checksummed header and a zlib-compressed payload: the events'
JSON bytes as the exporter encoded them, with their ids, so a replay sends them
without parsing or re-encoding any (see ``_spoolfile``, which also reads the
previous release's uncompressed files).

The guarantee: every batch file is named for exactly one owner, and only that
owner reads, rewrites or removes it, so no batch is delivered by two live
processes. A file changes owner only in ``adopt_orphans``, which first takes the
dead owner's lock (a live owner holds it; a second adopter finds it held), then
renames each file; a rename is atomic, so were two adopters ever to reach one
file, exactly one would get it. The only thing another process may do to a live
owner's file is evict it when the directory is over ``max_bytes``. A process
killed after the server took a batch but before ``remove`` leaves it to be sent
again by its adopter: delivery is at least once, and event ids let the server
drop the repeat.

Nothing here raises into the caller for I/O problems: failed writes, corrupt
files and evictions are counted in ``stats()`` and warned about once. Only the
constructor raises (``TracerelayError`` ``TR-SPOOL-DIR``) when the directory
cannot be created or locked at all, so the exporter can keep batches in memory.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tracerelay._diagnostics import warn_once
from tracerelay.delivery._spoolfile import (
    BATCH,
    LOCK_TRIES,
    OWNER,
    PENDING,
    TEMP,
    Corrupt,
    SpoolBatch,
    TooLarge,
    close_fds,
    decode,
    decode_pending,
    encode,
    encode_pending,
    inspect_spool,
    match_name,
    owner_of,
    try_lock,
    unlink,
)
from tracerelay.delivery.encoding import EncodedEvent
from tracerelay.errors import TracerelayError
from tracerelay.serialization import dumps

__all__ = ["Spool", "SpoolBatch", "SpoolEntry", "inspect_spool"]

_COUNTERS = ("evicted_files", "evicted_events", "corrupt", "write_errors", "read_errors", "adopted")
_KEEP_CORRUPT = 100
_RESCAN_SECONDS = 1.0
_live: weakref.WeakSet[Spool] = weakref.WeakSet()


@dataclass(frozen=True)
class SpoolEntry:
    """One batch file of this owner, as listed: what ``read`` and ``remove`` take."""

    path: str
    owner: str
    created_ns: int
    size: int
    event_count: int


def _dir_error(path: str, what: str, fix: str | None = None) -> TracerelayError:
    return TracerelayError(
        f"spool directory {path!r} {what}.",
        code="TR-SPOOL-DIR",
        fix=fix
        or "set spool_dir (TRACERELAY_SPOOL_DIR) to a writable folder on a local disk, or fix "
        "this one; until then undelivered batches are kept in memory only.",
    )


class Spool:
    """Batches on disk in ``directory``, owned by this live instance (see the module docstring).

    ``max_bytes`` bounds the batch files of all owners together; ``owner``
    defaults to ``"<pid>-<random hex>"`` (letters, digits, ``_`` and ``-``; a
    fixed owner re-owns its files after a restart). ``fsync=False`` skips the
    fsyncs, trading crash safety for speed. Thread-safe; a forked child gets a
    closed copy and must make its own ``Spool``. Raises ``TracerelayError``
    ``TR-SPOOL-DIR`` if the directory cannot be created or locked.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int,
        owner: str | None = None,
        fsync: bool = True,
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive int, not {max_bytes!r}")
        if owner is not None and not re.fullmatch(OWNER, owner, re.ASCII):
            raise ValueError(f"owner must be 1-64 letters, digits, '_' or '-', not {owner!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.max_bytes = max_bytes
        self.owner = owner or f"{os.getpid()}-{secrets.token_hex(4)}"
        self.fsync = fsync
        self._lock = threading.Lock()
        self._closed = False
        self._last_ns = 0
        self._counts = dict.fromkeys(_COUNTERS, 0)
        # Every owner's batch files, oldest first, as of the last scan plus this
        # instance's changes since: name → (size, events). Eviction pops from the front.
        self._index: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._index_bytes = 0
        self._scanned_at = -math.inf
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise _dir_error(self.directory, f"cannot be created or opened ({exc})") from exc
        lock_fd: int | None = None
        try:
            # A fixed owner restarting may meet an adopter holding its old lock for a
            # moment (the adopter then deletes it): wait a little before giving up.
            for _ in range(LOCK_TRIES if owner else 1):
                lock_fd = try_lock(self._path(self.owner + ".lock"))
                if lock_fd is not None:
                    break
                time.sleep(0.025)
            names = os.listdir(self.directory)
        except OSError as exc:
            close_fds(self._dir_fd)
            raise _dir_error(self.directory, f"cannot be locked ({exc})") from exc
        if lock_fd is None:
            close_fds(self._dir_fd)
            raise _dir_error(
                self.directory,
                f"is already used by a live process with owner {self.owner!r}",
                "give each process its own owner, or leave owner unset to get a unique one.",
            )
        self._lock_fd = lock_fd
        self._finalizer = weakref.finalize(self, close_fds, lock_fd, self._dir_fd)
        # Start past every sequence number this owner left (a fixed owner, restarted),
        # so a new or adopted name never lands on an existing file.
        own = [m for m in map(BATCH.fullmatch, names) if m and m[2] == self.owner]
        raw = [m for m in map(PENDING.fullmatch, names) if m and m[2] == self.owner]
        temps = [m for m in map(TEMP.fullmatch, names) if m and m[1] == self.owner]
        self._seq = max([int(m[3]) for m in own + raw] + [int(m[2]) for m in temps], default=0)
        # This owner's pending files (records an exit left unprocessed), oldest first:
        # kept in memory so the pipeline can ask for them without touching the disk.
        self._pending: list[str] = sorted(m[0] for m in raw)
        for m in temps:
            self._recover_temp(m[0])
        _live.add(self)

    def write(
        self,
        events: Sequence[Mapping[str, Any]],
        *,
        reason: str,
        attempts: int = 0,
        meta: Mapping[str, Any] | None = None,
    ) -> SpoolEntry | None:
        """Store one batch of event envelopes durably; its entry, or None if it was not kept.

        None means the batch is not on disk: the write failed (``write_errors``,
        warned once), the batch alone is larger than ``max_bytes`` (counted as
        evicted), or the spool is closed. After a write, the oldest files of any
        owner are evicted until the directory fits ``max_bytes``; with several
        writers, each keeps the bound on its view of the directory, re-read at
        least once a second. Each envelope's ``event_id`` is its id in ``encoded()``.
        """
        plain = [e if type(e) is dict else dict(e) for e in events]
        ids = [str(e.get("event_id")) for e in plain]
        return self._write(ids, [dumps(e) for e in plain], reason, attempts, meta)

    def write_encoded(
        self,
        events: Sequence[EncodedEvent],
        *,
        reason: str,
        attempts: int = 0,
        meta: Mapping[str, Any] | None = None,
    ) -> SpoolEntry | None:
        """``write`` for events already encoded: their bytes and ids stored as they are.

        ``read(entry).encoded()`` gives back the same ids and byte-identical data.
        """
        ids = [e.event_id for e in events]
        return self._write(ids, [e.data for e in events], reason, attempts, meta)

    def _write(
        self,
        ids: list[str],
        raw: list[bytes],
        reason: str,
        attempts: int,
        meta: Mapping[str, Any] | None,
    ) -> SpoolEntry | None:
        count = len(raw)
        with self._lock:
            created_ns = self._last_ns = max(time.time_ns(), self._last_ns + 1)
        # Compressing a large batch takes milliseconds: not while holding the lock.
        batch = SpoolBatch(ids, raw, reason, attempts, created_ns / 1e9, dict(meta or {}))
        try:
            data: bytes | None = encode(created_ns, batch)
        except TooLarge:
            data = None
        with self._lock:
            if self._closed:
                return None
            if data is None or len(data) > self.max_bytes:
                self._counts["evicted_files"] += 1
                self._counts["evicted_events"] += count
                size = sum(map(len, raw)) if data is None else len(data)
                self._warn("big", "a batch of %d bytes is over max_bytes, dropped", size)
                return None
            name = self._new_name(created_ns, count)
            if not self._store(name, data):
                return None
            if self._index and name < next(reversed(self._index)):
                # A later batch, encoded on another thread, was stored first: the index
                # must stay oldest first for eviction, so the bound check re-reads it.
                self._scanned_at = -math.inf
            self._index[name] = (len(data), count)
            self._index_bytes += len(data)
            self._enforce_bound()
            return SpoolEntry(self._path(name), self.owner, created_ns, len(data), count)

    def entries(self) -> list[SpoolEntry]:
        """This owner's batches, oldest first."""
        with self._lock:
            if self._closed:
                return []
            try:
                listing = self._listing(self.owner)
            except OSError as exc:
                self._warn("list", "cannot list it: %s", exc)
                return []
        return [
            SpoolEntry(self._path(name), owner, created_ns, size, events)
            for name, created_ns, owner, events, size in listing
        ]

    def read(self, entry: SpoolEntry) -> SpoolBatch | None:
        """The batch of ``entry``; None if it is gone, unreadable or corrupt (moved to corrupt/)."""
        with self._lock:
            return None if self._closed else self._read(entry)

    def update_attempts(self, entry: SpoolEntry, attempts: int) -> SpoolEntry | None:
        """Rewrite ``entry`` with a new attempt count, atomically and in place.

        The name, and so the batch's place in the replay order, stays the same.
        Returns the updated entry, or None if the batch is gone or corrupt, or the
        rewrite failed (the file then keeps its old count).
        """
        with self._lock:
            batch = None if self._closed else self._read(entry)
            if batch is None:
                return None
            name = os.path.basename(entry.path)
            try:
                data = encode(entry.created_ns, replace(batch, attempts=attempts))
            except TooLarge:  # only a version-1 file near 4 GiB could grow past the limit
                return None
            if not self._store(name, data):
                return None
            if name in self._index:
                self._index_bytes += len(data) - self._index[name][0]
                self._index[name] = (len(data), entry.event_count)
            return replace(entry, size=len(data))

    def remove(self, entry: SpoolEntry) -> None:
        """Delete a delivered batch; one already gone (evicted, say) is fine."""
        with self._lock:
            if self._closed or entry.owner != self.owner:
                return
            name = os.path.basename(entry.path)
            try:
                os.unlink(self._path(name))
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._warn("remove", "cannot remove %s: %s", name, exc)
                return
            self._forget(name)
            if name in self._pending:
                self._pending.remove(name)

    def adopt_orphans(self) -> int:
        """Take over the files of every dead owner; returns how many batches were adopted.

        An owner is dead when its lock file can be locked, or is missing. Its
        batches are renamed into this owner's name (keeping their creation time,
        so the replay order holds), a whole batch left in a temporary file is
        adopted too and a torn one deleted, and then its lock file is deleted.
        """
        with self._lock:
            if self._closed:
                return 0
            try:
                names = os.listdir(self.directory)
            except OSError as exc:
                self._warn("list", "cannot list it: %s", exc)
                return 0
            owners = {owner_of(m) for m in map(match_name, names) if m} - {self.owner}
            adopted = sum(self._adopt(owner) for owner in sorted(owners))
            self._counts["adopted"] += adopted
            if adopted:
                self._scanned_at = -math.inf  # adopted names sort by age, not at the index's end
            return adopted

    def write_pending(self, count: int, frames: bytes) -> bool:
        """Keep ``count`` unprocessed records (overflow frames) for this owner's next
        start or an adopter; False (counted, warned) if the write failed.

        Pending files are not evicted by ``max_bytes``: they are what an exit could
        not process, bounded by the queue and the overflow file that held them.
        """
        with self._lock:
            if self._closed:
                return False
            created_ns = self._last_ns = max(time.time_ns(), self._last_ns + 1)
            self._seq += 1
            name = f"{created_ns:020d}-{self.owner}-{self._seq}-{count}.raw"
            if not self._store(name, encode_pending(created_ns, count, frames)):
                return False
            self._pending.append(name)
            return True

    def has_pending(self) -> bool:
        """Whether this owner has pending files (in memory: no disk access)."""
        return bool(self._pending) and not self._closed

    def pending(self) -> list[SpoolEntry]:
        """This owner's pending files, oldest first, as known in memory (no disk access):
        those left by this owner's earlier run and those adopted since."""
        with self._lock:
            if self._closed:
                return []
            out = []
            for name in self._pending:
                match = PENDING.fullmatch(name)
                assert match is not None
                created_ns, records = int(match[1]), int(match[4])
                out.append(SpoolEntry(self._path(name), self.owner, created_ns, 0, records))
            return out

    def read_pending(self, entry: SpoolEntry) -> bytes | None:
        """The frames of a pending file; None (and forgotten) if gone, unreadable or
        corrupt (moved to corrupt/, warned)."""
        name = os.path.basename(entry.path)
        with self._lock:
            if self._closed or entry.owner != self.owner:
                return None
            try:
                with open(self._path(name), "rb") as file:
                    return decode_pending(file.read())[2]
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._counts["read_errors"] += 1
                self._warn("read", "cannot read %s: %s", name, exc)
            except Corrupt as exc:
                self._quarantine(name, str(exc))
            if name in self._pending:
                self._pending.remove(name)
            return None

    def stats(self) -> dict[str, int]:
        """This owner's ``files``, ``bytes`` and ``events``, and this instance's counters.

        The counters: ``evicted_files``, ``evicted_events`` (of any owner),
        ``corrupt``, ``write_errors``, ``read_errors`` and ``adopted``.
        """
        own = self.entries()
        with self._lock:
            counts = dict(self._counts)
        files, size, events = len(own), sum(e.size for e in own), sum(e.event_count for e in own)
        return {"files": files, "bytes": size, "events": events, **counts}

    def close(self) -> None:
        """Release the lock; the files stay, for this owner's restart or an adopter."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            _live.discard(self)
            self._finalizer.detach()
            unlink(self._path(self.owner + ".lock"))  # while locked: the next opener finds none
            close_fds(self._lock_fd, self._dir_fd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Spool directory={self.directory!r} owner={self.owner!r}>"

    # The methods below run with self._lock held (or in the constructor).

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _warn(self, kind: str, message: str, *args: object) -> None:
        warn_once(
            f"spool-{kind}:{self.directory}",
            "tracerelay: spool %s: " + message + " (only the first is logged; see stats())",
            self.directory,
            *args,
        )

    def _new_name(self, created_ns: int, events: int) -> str:
        self._seq += 1
        return f"{created_ns:020d}-{self.owner}-{self._seq}-{events}.batch"

    def _store(self, name: str, data: bytes) -> bool:
        """Write ``data`` under ``name`` atomically; False (counted, warned) if it failed."""
        self._seq += 1
        temp, final = self._path(f".{self.owner}.{self._seq}.tmp"), self._path(name)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, final)
        except OSError as exc:
            self._counts["write_errors"] += 1
            self._warn("write", "cannot write a batch, not spooled: %s", exc)
            unlink(temp)  # a caller told "not spooled" keeps the batch: no copy may stay behind
            return False
        if self.fsync:
            try:
                os.fsync(self._dir_fd)  # so the rename itself survives a power cut
            except OSError as exc:
                # The whole file is in place: deleting it now could only lose the batch.
                self._counts["write_errors"] += 1
                self._warn("dirsync", "cannot fsync the directory: %s", exc)
        return True

    def _read(self, entry: SpoolEntry) -> SpoolBatch | None:
        if entry.owner != self.owner:
            return None
        name = os.path.basename(entry.path)
        try:
            with open(self._path(name), "rb") as file:
                data = file.read()
            return decode(data)[1]
        except FileNotFoundError:
            self._forget(name)
        except OSError as exc:
            self._counts["read_errors"] += 1
            self._warn("read", "cannot read %s: %s", name, exc)
        except Corrupt as exc:
            self._quarantine(name, str(exc))
        return None

    def _listing(self, owner: str | None = None) -> list[tuple[str, int, str, int, int]]:
        """``(name, created_ns, owner, events, size)`` of the batch files, oldest first.

        Only ``owner``'s files, if given: the others are not even ``stat``-ed.
        """
        found, bad = [], []
        with os.scandir(self.directory) as items:
            for item in items:
                if not item.name.endswith(".batch"):
                    continue
                match = BATCH.fullmatch(item.name)
                if match is None:
                    bad.append(item.name)
                    continue
                if owner is not None and match[2] != owner:
                    continue
                try:
                    size = item.stat().st_size
                except FileNotFoundError:
                    continue
                found.append((item.name, int(match[1]), match[2], int(match[4]), size))
        for name in bad:
            self._quarantine(name, "not a spool file name")
        return sorted(found)

    def _enforce_bound(self) -> None:
        # Other processes add and remove files too: the index is re-read at least
        # once a second, so the bound holds on a view at most that old.
        if time.monotonic() - self._scanned_at > _RESCAN_SECONDS:
            try:
                listing = self._listing()
            except OSError as exc:
                self._warn("list", "cannot list it: %s", exc)
            else:
                self._index = OrderedDict((n, (size, ev)) for n, _, _, ev, size in listing)
                self._index_bytes = sum(size for *_, size in listing)
                self._scanned_at = time.monotonic()
        while self._index_bytes > self.max_bytes and self._index:
            name, (size, events) = self._index.popitem(last=False)
            self._index_bytes -= size
            # A file already gone was delivered or evicted by someone else: not counted.
            if unlink(self._path(name)):
                self._counts["evicted_files"] += 1
                self._counts["evicted_events"] += events
                self._warn("full", "over max_bytes=%d, oldest batches dropped", self.max_bytes)

    def _forget(self, name: str) -> None:
        size_events = self._index.pop(name, None)
        if size_events is not None:
            self._index_bytes -= size_events[0]

    def _quarantine(self, name: str, why: str) -> None:
        self._forget(name)
        corrupt = self._path("corrupt")
        try:
            os.makedirs(corrupt, mode=0o700, exist_ok=True)
            os.replace(self._path(name), os.path.join(corrupt, f"{time.time_ns():020d}-{name}"))
        except FileNotFoundError:
            return  # another process set it aside first
        except OSError:
            if not unlink(self._path(name)):  # left in place it would fail every scan again
                return
        self._counts["corrupt"] += 1
        self._warn("corrupt", "file %s is corrupt (%s), moved to corrupt/", name, why)
        try:
            kept = sorted(os.listdir(corrupt))
        except OSError:
            return
        for old in kept[: max(0, len(kept) - _KEEP_CORRUPT)]:
            unlink(os.path.join(corrupt, old))

    def _adopt(self, owner: str) -> int:
        lock_path = self._path(owner + ".lock")
        try:
            fd = try_lock(lock_path)
        except OSError as exc:
            self._warn("adopt", "cannot lock %s: %s", lock_path, exc)
            return 0
        if fd is None:
            return 0  # alive
        adopted = 0
        try:
            # Listed again now that the lock is held: the owner is dead, so this is all it left.
            for name in sorted(os.listdir(self.directory)):
                match = match_name(name)
                if match is None or owner_of(match) != owner:
                    continue
                if match.re is TEMP:
                    adopted += self._recover_temp(name)
                elif match.re is BATCH or match.re is PENDING:
                    target = self._new_name(int(match[1]), int(match[4]))
                    if match.re is PENDING:
                        target = target.removesuffix(".batch") + ".raw"
                    try:
                        os.rename(self._path(name), self._path(target))
                        adopted += 1
                    except FileNotFoundError:
                        continue  # taken by another adopter, evicted or set aside meanwhile
                    if match.re is PENDING:
                        self._pending.append(target)
                        self._pending.sort()
            os.unlink(lock_path)
        except OSError as exc:
            self._warn("adopt", "cannot adopt the files of %s: %s", owner, exc)
        finally:
            os.close(fd)
        return adopted

    def _recover_temp(self, name: str) -> int:
        """Adopt a temporary file holding a whole batch or pending file (a crash before
        the rename); 1 if so."""
        path = self._path(name)
        try:
            with open(path, "rb") as file:
                data = file.read()
            if data.startswith(b"TRPR"):
                created_ns, count, _ = decode_pending(data)
                target = self._new_name(created_ns, count).removesuffix(".batch") + ".raw"
                os.rename(path, self._path(target))
                self._pending.append(target)
                self._pending.sort()
                return 1
            created_ns, batch = decode(data)
            os.rename(path, self._path(self._new_name(created_ns, batch.count)))
            return 1
        except Corrupt:
            unlink(path)  # torn mid-write: its writer never reported the batch as spooled
        except OSError:
            pass
        return 0


def _after_fork_in_child() -> None:
    # A forked child shares the parent's lock. Kept, it would make a dead parent look
    # alive; used, it would let two processes deliver one owner's files. So the child's
    # copies are closed (the parent keeps its lock) and it must make a Spool of its own.
    for spool in list(_live):
        spool._lock = threading.Lock()
        spool._closed = True
        spool._finalizer.detach()
        close_fds(spool._lock_fd, spool._dir_fd)
    _live.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
