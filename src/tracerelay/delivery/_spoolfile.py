"""The spool's files on disk: their names, the batch file format and the liveness lock.

Private to ``tracerelay.delivery.spool``, which describes the directory layout
and the ownership rules these pieces serve. Kept apart so the spool module holds
only the policy: who owns which file, when to evict, when to adopt.

A batch file (format version 2) is a 32-byte header, little-endian: ``TRSP``,
format version (u16), flags (u16; bit 0: the payload is zlib-compressed),
created_ns (u64), event count (u32), stored payload length (u32), payload length
before compression (u32), then a CRC32 of those 28 bytes and the stored payload.
The CRC also covers the header, so a flipped bit in the event count is caught
too. The payload, before compression, is one JSON line ``{"reason", "attempts",
"created", "meta", "ids"}`` (``ids``: the event ids, in order), ``\n``, then the
events' JSON bytes exactly as the exporter encoded them, joined by ``\n``
(encoded JSON never holds a raw newline). Replaying a batch parses that one
line, never an event. Decompression stops at the declared length, which may be
at most what deflate can reach from the stored length, so a damaged or hostile
file cannot make the reader allocate more than an honest one would.

A pending file (``.raw``, see ``tracerelay.pending``) holds records a process
had not yet processed when it exited: a 28-byte header, little-endian, ``TRPR``,
version (u16, 1), flags (u16, 0), created_ns (u64), record count (u32), frames'
length (u64), then a CRC32 of header and frames, and the frames as the overflow
file writes them.

Version 1 (the previous release) had a 28-byte header whose flags field was 0
and no uncompressed length; its payload was orjson of ``{"events", "reason",
"attempts", "created", "meta"}``. Such files are still read; a rewrite
(``update_attempts``) stores them as version 2.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from tracerelay.delivery.encoding import EncodedEvent
from tracerelay.serialization import dumps, loads

__all__ = [
    "BATCH",
    "LOCK",
    "LOCK_TRIES",
    "OWNER",
    "PENDING",
    "TEMP",
    "Corrupt",
    "SpoolBatch",
    "TooLarge",
    "close_fds",
    "decode",
    "decode_pending",
    "encode",
    "encode_pending",
    "inspect_spool",
    "match_name",
    "owner_of",
    "try_lock",
    "unlink",
]

_MAGIC = b"TRSP"
_VERSION = 2
_COMPRESSED = 0x0001  # flags bit 0
_START = struct.Struct("<4sH")  # magic, version: enough to pick the layout
# magic, version, flags, created_ns, events, stored payload length, length before compression
_HEAD = struct.Struct("<4sHHQIII")
# Version 1: magic, version, reserved (0), created_ns, events, payload length
_HEAD_V1 = struct.Struct("<4sHHQII")
_CRC = struct.Struct("<I")
# A pending file: magic, version, flags (0), created_ns, records, frames' length.
_PENDING_MAGIC = b"TRPR"
_PENDING_HEAD = struct.Struct("<4sHHQIQ")
_U32 = 0xFFFF_FFFF
# Level 1, measured through encode() and decode().encoded() on 5,000-event batches of
# ~410-byte spans with random ids (the tests' span_events) / bench/serialization.py's
# ~865-byte mix (x86-64, CPython 3.11; CPU per event):
#   level 1: 4.8x / 8.5x smaller, write 2.7 / 4.0 us, read 1.8 / 2.5 us
#   level 3: 4.9x / 8.9x,         write 3.0 / 4.1 us, read 1.7 / 2.6 us
#   level 6: 5.4x / 10.6x,        write 6.0 / 8.1 us, read 1.7 / 3.1 us
# (Version 1: 1.0x, write 0.7 us, read plus the re-encoding replay needed 3.2 / 6.9 us.)
# Levels 2-3 save 1-5 % more for about the same CPU; 6 doubles the write cost, which
# is paid for every event spooled (all of them with durability="disk").
LEVEL = 1
# Deflate cannot expand data by more than 1032:1 (one 258-byte match per ~2 bits):
# a declared length beyond that is a lie, refused before anything is allocated.
_MAX_RATIO = 1032
OWNER = r"[A-Za-z0-9_-]{1,64}"
BATCH = re.compile(rf"(\d{{20}})-({OWNER})-(\d{{1,19}})-(\d{{1,10}})\.batch", re.ASCII)
# Records a process could not process before it exited (see tracerelay.pending).
PENDING = re.compile(rf"(\d{{20}})-({OWNER})-(\d{{1,19}})-(\d{{1,10}})\.raw", re.ASCII)
TEMP = re.compile(rf"\.({OWNER})\.(\d{{1,19}})\.tmp", re.ASCII)
LOCK = re.compile(rf"({OWNER})\.lock", re.ASCII)
LOCK_TRIES = 20


@dataclass(frozen=True)
class SpoolBatch:
    """A batch read back: its events as they were stored, and what was recorded about them.

    ``data`` holds each event's JSON bytes, byte for byte as written, and ``ids``
    their event ids; ``encoded()`` pairs them for sending again. ``events``
    parses them into dicts, on first use, for callers that look inside.
    """

    ids: Sequence[str]
    data: Sequence[bytes]
    reason: str
    attempts: int
    created: float
    meta: dict[str, Any]

    @property
    def count(self) -> int:
        """How many events the batch holds."""
        return len(self.data)

    def encoded(self) -> list[EncodedEvent]:
        """The events ready to send again: their stored bytes and ids, nothing re-encoded."""
        return [EncodedEvent(i, d) for i, d in zip(self.ids, self.data, strict=True)]

    @cached_property
    def events(self) -> list[dict[str, Any]]:
        """The events parsed into dicts (once, on first use). Sending uses ``encoded()``."""
        return [loads(d) for d in self.data]


class Corrupt(Exception):
    """A file failed its checks; the message says which."""


class TooLarge(ValueError):
    """A batch too large for the format's 32-bit lengths (over 4 GiB); nothing was written."""


def encode(created_ns: int, b: SpoolBatch, *, level: int = LEVEL) -> bytes:
    """The whole version-2 file for one batch: header, checksum, payload (compressed if it pays).

    Raises ``TooLarge`` when the batch does not fit the format's 32-bit lengths.
    """
    head_line = dumps(
        {
            "reason": b.reason,
            "attempts": b.attempts,
            "created": b.created,
            "meta": b.meta,
            "ids": list(b.ids),
        }
    )
    count = len(b.data)
    if len(b.ids) != count:
        raise ValueError(f"{len(b.ids)} ids for {count} events")
    payload = b"\n".join([head_line, *b.data]) if count else head_line + b"\n"
    if count and payload.count(b"\n") != count:
        # Only whitespace in valid JSON can be a raw newline (inside strings it is
        # escaped, and UTF-8 never uses the byte otherwise): a space means the same.
        payload = b"\n".join([head_line, *(d.replace(b"\n", b" ") for d in b.data)])
    if len(payload) > _U32:
        raise TooLarge(f"a batch of {len(payload)} bytes is over the format's 4 GiB")
    flags, stored = 0, payload
    if level:
        packed = zlib.compress(payload, level)
        if len(packed) < len(payload):
            flags, stored = _COMPRESSED, packed
    head = _HEAD.pack(_MAGIC, _VERSION, flags, created_ns, count, len(stored), len(payload))
    return head + _CRC.pack(zlib.crc32(stored, zlib.crc32(head))) + stored


def decode(data: bytes) -> tuple[int, SpoolBatch]:
    """``(created_ns, batch)``; raises ``Corrupt`` for anything but a whole, intact file.

    Reads format versions 1 and 2.
    """
    if len(data) < _HEAD_V1.size + _CRC.size:
        raise Corrupt("shorter than the header")
    magic, version = _START.unpack_from(data)
    if magic != _MAGIC:
        raise Corrupt("not a spool file")
    if version == 1:
        return _decode_v1(data)
    if version != _VERSION:
        raise Corrupt(f"format version {version}, this tracerelay reads 1 and {_VERSION}")
    if len(data) < _HEAD.size + _CRC.size:
        raise Corrupt("shorter than the header")
    _, _, flags, created_ns, count, length, raw_length = _HEAD.unpack_from(data)
    payload = _checked_payload(data, _HEAD.size, length)
    if flags & ~_COMPRESSED:
        raise Corrupt(f"unknown flags {flags:#06x}")
    if flags & _COMPRESSED:
        payload = _inflate(payload, raw_length)
    elif raw_length != length:
        raise Corrupt("uncompressed, but the two lengths differ")
    # One pass counting newlines before splitting: a payload of nothing but
    # newlines must not become millions of objects.
    if payload.count(b"\n") != max(count, 1):
        raise Corrupt("payload does not hold the declared number of events")
    head_line, *events = payload.split(b"\n")
    if count == 0:
        if events != [b""]:
            raise Corrupt("payload does not hold the declared number of events")
        events = []
    try:
        fields = loads(head_line)
        reason, attempts, created, meta, ids = (
            fields[k] for k in ("reason", "attempts", "created", "meta", "ids")
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise Corrupt("payload is not a batch") from exc
    # The checksum passed, so this only fails for a file some other program wrote.
    if not (
        isinstance(ids, list)
        and len(ids) == count
        and all(type(i) is str for i in ids)
        and isinstance(reason, str)
        and type(attempts) is int
        and type(created) in (int, float)
        and isinstance(meta, dict)
    ):
        raise Corrupt("payload has the wrong shape")
    return created_ns, SpoolBatch(ids, events, reason, attempts, created, meta)


def _checked_payload(data: bytes, header_size: int, length: int) -> bytes:
    """The stored payload after the header, once its length and checksum match."""
    if length != len(data) - header_size - _CRC.size:
        raise Corrupt("truncated or extended")
    view = memoryview(data)
    if (
        zlib.crc32(view[header_size + _CRC.size :], zlib.crc32(view[:header_size]))
        != _CRC.unpack_from(data, header_size)[0]
    ):
        raise Corrupt("checksum mismatch")
    return data[header_size + _CRC.size :]


def _inflate(packed: bytes, raw_length: int) -> bytes:
    """``packed`` decompressed, if it is exactly ``raw_length`` bytes; never allocates more."""
    # 0 would mean "no limit" to decompress(); a payload always has its first line.
    if not 0 < raw_length <= len(packed) * _MAX_RATIO:
        raise Corrupt(f"declares {raw_length} bytes, impossible from {len(packed)} compressed")
    inflater = zlib.decompressobj()
    try:
        # max_length bounds the output buffer (which grows only as output comes).
        payload = inflater.decompress(packed, raw_length)
    except zlib.error as exc:
        raise Corrupt(f"compressed payload is damaged ({exc})") from exc
    if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise Corrupt("compressed payload is longer than declared, or cut short")
    if len(payload) != raw_length:
        raise Corrupt("compressed payload is shorter than declared")
    return payload


def _decode_v1(data: bytes) -> tuple[int, SpoolBatch]:
    """A version-1 file, checked as that release did; its events re-encoded once, here."""
    _, _, _, created_ns, count, length = _HEAD_V1.unpack_from(data)
    payload = _checked_payload(data, _HEAD_V1.size, length)
    try:
        raw = loads(payload)
        events, reason, attempts, created, meta = (
            raw[k] for k in ("events", "reason", "attempts", "created", "meta")
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise Corrupt("payload is not a batch") from exc
    if not (
        isinstance(events, list)
        and len(events) == count
        and all(isinstance(e, dict) for e in events)
        and isinstance(reason, str)
        and type(attempts) is int
        and type(created) in (int, float)
        and isinstance(meta, dict)
    ):
        raise Corrupt("payload has the wrong shape")
    # As the previous release replayed them: the id from the envelope, the bytes re-encoded.
    ids = [str(e.get("event_id")) for e in events]
    return created_ns, SpoolBatch(ids, [dumps(e) for e in events], reason, attempts, created, meta)


def encode_pending(created_ns: int, count: int, frames: bytes) -> bytes:
    """A whole pending file: ``count`` records' frames (``tracerelay.overflow``), checksummed.

    Not compressed: it is written once, at exit, when time matters more than disk.
    """
    head = _PENDING_HEAD.pack(_PENDING_MAGIC, 1, 0, created_ns, count, len(frames))
    return head + _CRC.pack(zlib.crc32(frames, zlib.crc32(head))) + frames


def decode_pending(data: bytes) -> tuple[int, int, bytes]:
    """``(created_ns, count, frames)`` of a pending file; raises ``Corrupt`` unless intact."""
    if len(data) < _PENDING_HEAD.size + _CRC.size:
        raise Corrupt("shorter than the header")
    magic, version, flags, created_ns, count, length = _PENDING_HEAD.unpack_from(data)
    if magic != _PENDING_MAGIC:
        raise Corrupt("not a pending-records file")
    if version != 1 or flags:
        raise Corrupt(f"format version {version} (flags {flags:#06x}), this tracerelay reads 1")
    return created_ns, count, _checked_payload(data, _PENDING_HEAD.size, length)


def try_lock(path: str, *, shared: bool = False, create: bool = True) -> int | None:
    """A descriptor holding ``flock`` on ``path``; None if a live process holds it (or no file).

    After locking, the path must still name the locked file: an adopter or a
    closing owner unlinks the lock file while holding it, and a lock on the
    unlinked file would protect nothing.
    """
    flags = (os.O_RDWR | os.O_CREAT if create else os.O_RDONLY) | os.O_CLOEXEC
    for _ in range(LOCK_TRIES):
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            try:
                same = os.path.samestat(os.stat(path), os.fstat(fd))
            except FileNotFoundError:
                same = False
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)
    return None


def close_fds(*fds: int) -> None:
    """Close descriptors, ignoring any already closed."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def unlink(path: str) -> bool:
    """Delete ``path``; False if it could not be (gone already, say)."""
    try:
        os.unlink(path)
        return True
    except OSError:
        return False


def match_name(name: str) -> re.Match[str] | None:
    """The match of a batch, pending, temporary or lock file name; None for any other file."""
    return (
        BATCH.fullmatch(name)
        or PENDING.fullmatch(name)
        or TEMP.fullmatch(name)
        or LOCK.fullmatch(name)
    )


def owner_of(match: re.Match[str]) -> str:
    """The owner named in a ``match_name`` match."""
    return match[2] if match.re is BATCH or match.re is PENDING else match[1]


def inspect_spool(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """A summary of every owner's files in a spool directory, changing nothing.

    Keys: ``directory``, ``exists``, ``files``, ``events``, ``bytes``,
    ``temp_files``, ``corrupt`` (files in corrupt/), ``pending_files`` and
    ``pending_records`` (records kept unprocessed at an exit, processed when the
    app next starts: they are in no other figure), and ``owners``: owner →
    ``alive``, ``files``, ``events``, ``bytes``, ``oldest_age`` (seconds, None
    without files). Never raises for I/O problems. Each owner's lock is taken,
    shared, for an instant to see if it is alive: an adopter meeting it then
    skips that owner until its next call.
    """
    path = os.path.abspath(os.fspath(directory))
    summary: dict[str, Any] = {"directory": path, "exists": False, "files": 0, "events": 0}
    summary.update(bytes=0, temp_files=0, corrupt=0, pending_files=0, pending_records=0)
    summary["owners"] = {}
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return summary
    summary["exists"], now = True, time.time_ns()
    for match in filter(None, map(match_name, names)):
        row = summary["owners"].setdefault(
            owner_of(match),
            {"alive": False, "files": 0, "events": 0, "bytes": 0, "oldest_age": None},
        )
        summary["temp_files"] += match.re is TEMP
        if match.re is PENDING:
            summary["pending_files"] += 1
            summary["pending_records"] += int(match[4])
        if match.re is not BATCH:
            continue
        try:
            size = os.stat(os.path.join(path, match[0])).st_size
        except OSError:
            continue
        for key, value in (("files", 1), ("events", int(match[4])), ("bytes", size)):
            row[key] += value
            summary[key] += value
        if row["oldest_age"] is None:  # names are sorted: the first is the oldest
            row["oldest_age"] = max(0.0, (now - int(match[1])) / 1e9)
    for owner, row in summary["owners"].items():
        lock_path = os.path.join(path, owner + ".lock")
        try:
            # A shared lock is refused while the owner holds its exclusive one.
            fd = try_lock(lock_path, shared=True, create=False)
        except OSError:
            fd = None
        row["alive"] = fd is None and os.path.exists(lock_path)
        if fd is not None:
            os.close(fd)
    summary["owners"] = dict(sorted(summary["owners"].items()))
    try:
        summary["corrupt"] = len(os.listdir(os.path.join(path, "corrupt")))
    except OSError:
        pass
    return summary
