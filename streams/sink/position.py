"""The position file of a state directory: how many bytes are good, the last offsets written.

Two page-aligned slots, written in turn in place (one ``pwrite`` and one ``fdatasync``, no
rename): a torn slot fails its checksum and the other slot, one step older, still holds.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from streams.errors import SinkCorruptionError

__all__ = [
    "POSITION_NAME",
    "SLOT_BYTES",
    "SinkPosition",
    "datasync",
    "fsync_dir",
    "parse_position",
    "position_slot",
    "read_position",
    "stage_position",
    "write_all",
    "write_position",
]

POSITION_NAME: Final = ".pending_escalations.position"


@dataclass(frozen=True, slots=True)
class SinkPosition:
    size: int = 0  # bytes of the file that are known good
    entries: int = 0  # lines in those bytes
    offsets: Mapping[str, int] = field(default_factory=dict)  # "topic:partition" -> last offset
    last_ts_us: int | None = None  # ts of the last entry written
    #: How many times the position was recorded; picks the newer of the file's two slots.
    seq: int = field(default=0, compare=False)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "size": self.size,
                "entries": self.entries,
                "offsets": dict(self.offsets),
                "last_ts_us": self.last_ts_us,
                "seq": self.seq,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes, path: Path) -> SinkPosition:
        try:
            data = json.loads(raw)
            position = cls(
                size=int(data["size"]),
                entries=int(data["entries"]),
                offsets={str(k): int(v) for k, v in data["offsets"].items()},
                last_ts_us=None if data.get("last_ts_us") is None else int(data["last_ts_us"]),
                seq=int(data.get("seq", 0)),
            )
            if position.size < 0 or position.entries < 0:
                raise ValueError(f"negative size {position.size} or entries {position.entries}")
            return position
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SinkCorruptionError(f"{path}: unreadable sink position: {exc}") from exc


# -- the position file: two slots, each a page: magic, length, CRC-32, then the JSON ----------

SLOT_BYTES: Final = 4096
_SLOT_HEAD: Final = struct.Struct(">4sII")
_SLOT_MAGIC: Final = b"ESP1"
datasync = getattr(os, "fdatasync", os.fsync)


def position_slot(body: bytes) -> bytes:
    """One slot's bytes (unpadded) holding ``body``, a position's JSON."""
    return _SLOT_HEAD.pack(_SLOT_MAGIC, len(body), zlib.crc32(body)) + body


def _slot_body(raw: bytes) -> bytes | None:
    """The JSON of a slot whose checksum holds, or None (never written, or torn)."""
    if len(raw) < _SLOT_HEAD.size:
        return None
    magic, length, crc = _SLOT_HEAD.unpack_from(raw)
    body = raw[_SLOT_HEAD.size : _SLOT_HEAD.size + length]
    if magic != _SLOT_MAGIC or len(body) != length or zlib.crc32(body) != crc:
        return None
    return body


def parse_position(raw: bytes, path: Path) -> SinkPosition:
    """The newest intact slot of a position file's bytes."""
    slot = len(raw) // 2
    if slot < SLOT_BYTES or len(raw) != 2 * slot or slot % SLOT_BYTES:
        raise SinkCorruptionError(
            f"{path}: unreadable sink position: {len(raw)} bytes is not two slots of a "
            f"multiple of {SLOT_BYTES} bytes"
        )
    bodies = [b for b in (_slot_body(raw[:slot]), _slot_body(raw[slot:])) if b is not None]
    if not bodies:
        raise SinkCorruptionError(f"{path}: unreadable sink position: no intact slot")
    return max((SinkPosition.from_json(b, path) for b in bodies), key=lambda p: p.seq)


def read_position(path: Path) -> SinkPosition | None:
    """The position recorded in ``path``, None when there is none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    return parse_position(raw, path)


def write_position(directory: Path, position: SinkPosition) -> None:
    """Record ``position`` durably."""
    fd = stage_position(directory, position)
    if fd is not None:
        try:
            datasync(fd)
        finally:
            os.close(fd)


def stage_position(directory: Path, position: SinkPosition) -> int | None:
    """Write ``position`` in place, in slot ``seq % 2``, and return the open file to sync.

    Without a position file (or with slots too small for the offsets) a whole new file is
    written, fsynced and renamed into place instead: then it is durable and None returns.
    """
    slot = position_slot(position.to_json())
    path = directory / POSITION_NAME
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        fd = -1
    if fd >= 0:
        try:
            size = os.fstat(fd).st_size
            if size >= 2 * len(slot) and size % (2 * SLOT_BYTES) == 0:
                _write_slot(fd, slot, (position.seq % 2) * (size // 2))
                fd, staged = -1, fd
                return staged
        finally:
            if fd >= 0:
                os.close(fd)
    # First record (or a slot too small for the offsets): a whole new file, renamed in place.
    slot_size = SLOT_BYTES
    while slot_size < len(slot):
        slot_size *= 2
    slots = [bytes(slot_size), bytes(slot_size)]
    slots[position.seq % 2] = slot.ljust(slot_size, b"\0")
    tmp = directory / (POSITION_NAME + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, b"".join(slots))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(directory)
    return None


def _write_slot(fd: int, slot: bytes, at: int) -> None:
    """One write within one page (made durable by the caller's sync)."""
    written = os.pwrite(fd, slot, at)
    if written != len(slot):
        raise OSError(f"short write of a position slot: {written} of {len(slot)} bytes")


def write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
