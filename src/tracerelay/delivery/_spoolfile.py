"""The spool's files on disk: their names, the batch file format and the liveness lock.

Private to ``tracerelay.delivery.spool``, which describes the directory layout
and the ownership rules these pieces serve. Kept apart so the spool module holds
only the policy: who owns which file, when to evict, when to adopt.

A batch file is a 28-byte header (``TRSP``, format version, 0, created_ns, event
count, payload length, then a CRC32 of those 24 bytes and the payload), then the
payload: orjson of ``{"events", "reason", "attempts", "created", "meta"}``. The
CRC also covers the header, so a flipped bit in the event count is caught too.
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
from typing import Any

from tracerelay.serialization import dumps, loads

__all__ = [
    "BATCH",
    "LOCK",
    "LOCK_TRIES",
    "OWNER",
    "TEMP",
    "Corrupt",
    "SpoolBatch",
    "close_fds",
    "decode",
    "encode",
    "inspect_spool",
    "match_name",
    "owner_of",
    "try_lock",
    "unlink",
]

_MAGIC = b"TRSP"
_VERSION = 1
_HEAD = struct.Struct("<4sHHQII")  # magic, version, reserved, created_ns, events, payload length
_CRC = struct.Struct("<I")
_HEADER_SIZE = _HEAD.size + _CRC.size
OWNER = r"[A-Za-z0-9_-]{1,64}"
BATCH = re.compile(rf"(\d{{20}})-({OWNER})-(\d{{1,19}})-(\d{{1,10}})\.batch", re.ASCII)
TEMP = re.compile(rf"\.({OWNER})\.(\d{{1,19}})\.tmp", re.ASCII)
LOCK = re.compile(rf"({OWNER})\.lock", re.ASCII)
LOCK_TRIES = 20


@dataclass(frozen=True)
class SpoolBatch:
    """A batch read back: the event envelopes and what was recorded about them."""

    events: list[dict[str, Any]]
    reason: str
    attempts: int
    created: float
    meta: dict[str, Any]


class Corrupt(Exception):
    """A file failed its checks; the message says which."""


def encode(created_ns: int, b: SpoolBatch, raw_events: Sequence[bytes] | None = None) -> bytes:
    """The whole file for one batch: header, checksum, payload.

    ``raw_events``, when given, are the events already encoded as JSON objects;
    they are spliced into the payload as they are (``b.events`` is then unused),
    which spares the sender decoding and re-encoding every event it spills.
    """
    fields = {"reason": b.reason, "attempts": b.attempts, "created": b.created, "meta": b.meta}
    if raw_events is None:
        payload = dumps({"events": b.events, **fields})
        count = len(b.events)
    else:
        payload = b'{"events":[' + b",".join(raw_events) + b"]," + dumps(fields)[1:]
        count = len(raw_events)
    head = _HEAD.pack(_MAGIC, _VERSION, 0, created_ns, count, len(payload))
    return head + _CRC.pack(zlib.crc32(payload, zlib.crc32(head))) + payload


def decode(data: bytes) -> tuple[int, SpoolBatch]:
    """``(created_ns, batch)``; raises ``Corrupt`` for anything but a whole, intact file."""
    if len(data) < _HEADER_SIZE:
        raise Corrupt("shorter than the header")
    magic, version, _, created_ns, count, length = _HEAD.unpack_from(data)
    if magic != _MAGIC:
        raise Corrupt("not a spool file")
    if version != _VERSION:
        raise Corrupt(f"format version {version}, this tracerelay reads {_VERSION}")
    if length != len(data) - _HEADER_SIZE:
        raise Corrupt("truncated or extended")
    view = memoryview(data)
    if (
        zlib.crc32(view[_HEADER_SIZE:], zlib.crc32(view[: _HEAD.size]))
        != _CRC.unpack_from(data, _HEAD.size)[0]
    ):
        raise Corrupt("checksum mismatch")
    try:
        raw = loads(data[_HEADER_SIZE:])
        events, reason, attempts, created, meta = (
            raw[k] for k in ("events", "reason", "attempts", "created", "meta")
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise Corrupt("payload is not a batch") from exc
    # The checksum passed, so this only fails for a file some other program wrote.
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
    return created_ns, SpoolBatch(events, reason, attempts, created, meta)


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
    """The match of a batch, temporary or lock file name; None for any other file."""
    return BATCH.fullmatch(name) or TEMP.fullmatch(name) or LOCK.fullmatch(name)


def owner_of(match: re.Match[str]) -> str:
    """The owner named in a ``match_name`` match."""
    return match[2] if match.re is BATCH else match[1]


def inspect_spool(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """A summary of every owner's files in a spool directory, changing nothing.

    Keys: ``directory``, ``exists``, ``files``, ``events``, ``bytes``,
    ``temp_files``, ``corrupt`` (files in corrupt/), and ``owners``: owner →
    ``alive``, ``files``, ``events``, ``bytes``, ``oldest_age`` (seconds, None
    without files). Never raises for I/O problems. Each owner's lock is taken,
    shared, for an instant to see if it is alive: an adopter meeting it then
    skips that owner until its next call.
    """
    path = os.path.abspath(os.fspath(directory))
    summary: dict[str, Any] = {"directory": path, "exists": False, "files": 0, "events": 0}
    summary.update(bytes=0, temp_files=0, corrupt=0, owners={})
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
