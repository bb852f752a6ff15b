"""A recorded position (how many bytes are good, the last offsets written) and the position file
of a state directory, where ``sink rebuild`` (and the adoption of another program's file) record
one; checkpoints append theirs to the position logs (:mod:`streams.sink.positionlog`).

Two page-aligned slots, written in turn in place (one ``pwrite``, made durable by the
checkpoint's sync, no rename): a torn slot fails its checksum and the other slot, one step
older, still holds. A new file (or one whose slots are too small) is written whole under a
temporary name and renamed into place.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from streams.errors import SinkCorruptionError
from streams.sink.fileio import OS_FILES, FileLayer, StrPath, read_all, write_all

__all__ = [
    "POSITION_NAME",
    "SLOT_BYTES",
    "SinkPosition",
    "parse_position",
    "position_slot",
    "read_position",
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
    #: The life of the data file it describes: 0 for a file the sink created, a random number
    #: for each file ``sink rebuild`` wrote (see :mod:`streams.sink.positionlog`).
    epoch: int = field(default=0, compare=False)

    def to_json(self) -> bytes:
        """``json.dumps`` of the fields with sorted keys, built directly (a checkpoint writes
        one per directory written)."""
        offsets = json.dumps(dict(self.offsets), sort_keys=True)
        last = "null" if self.last_ts_us is None else int(self.last_ts_us)
        epoch = f'"epoch": {int(self.epoch)}, ' if self.epoch else ""
        return (
            f'{{"entries": {int(self.entries)}, {epoch}"last_ts_us": {last}, '
            f'"offsets": {offsets}, "seq": {int(self.seq)}, "size": {int(self.size)}}}'
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes, path: StrPath) -> SinkPosition:
        try:
            data = json.loads(raw)
            position = cls(
                size=int(data["size"]),
                entries=int(data["entries"]),
                offsets={str(k): int(v) for k, v in data["offsets"].items()},
                last_ts_us=None if data.get("last_ts_us") is None else int(data["last_ts_us"]),
                seq=int(data.get("seq", 0)),
                epoch=int(data.get("epoch", 0)),
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
TMP_SUFFIX: Final = ".tmp"


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


def parse_position(raw: bytes, path: StrPath) -> SinkPosition:
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


def read_position(path: StrPath, files: FileLayer = OS_FILES) -> SinkPosition | None:
    """The position recorded in ``path``, None when there is none."""
    try:
        fd = files.open(path, readonly=True)
    except FileNotFoundError:
        return None
    try:
        return _load_position(files, fd, path)
    finally:
        files.close(fd)


def _load_position(files: FileLayer, fd: int, path: StrPath) -> SinkPosition:
    """The newest intact slot of an open position file."""
    return parse_position(read_all(files, fd), path)


def _record_slot(files: FileLayer, fd: int, position: SinkPosition) -> bool:
    """Writes ``position`` in place, in slot ``seq % 2`` (one ``pwrite`` within a page run);
    False, writing nothing, when the file's slots are too small for it."""
    slot = position_slot(position.to_json())
    size = files.fstat(fd).size
    if size < 2 * len(slot) or size % (2 * SLOT_BYTES):
        return False
    at = (position.seq % 2) * (size // 2)
    written = files.pwrite(fd, slot, at)
    if written != len(slot):
        raise OSError(f"short write of a position slot: {written} of {len(slot)} bytes")
    return True


def _create_position(files: FileLayer, directory: Path, position: SinkPosition) -> None:
    """A whole new position file (slots big enough for ``position``), synced, then renamed
    into place (the caller syncs the directory)."""
    body = position_slot(position.to_json())
    slot_size = SLOT_BYTES
    while slot_size < len(body):
        slot_size *= 2
    slots = [bytes(slot_size), bytes(slot_size)]
    slots[position.seq % 2] = body.ljust(slot_size, b"\0")
    tmp = directory / (POSITION_NAME + TMP_SUFFIX)
    fd = files.open(tmp, create=True)
    try:
        files.truncate(fd, 0)
        write_all(files, fd, b"".join(slots), 0)
        files.datasync(fd)  # before the rename: the name never reaches the disk before the data
    finally:
        files.close(fd)
    files.replace(tmp, directory / POSITION_NAME)


def write_position(files: FileLayer, directory: Path, position: SinkPosition) -> None:
    """Records ``position`` durably (in place when its slots fit, else a new file)."""
    path = directory / POSITION_NAME
    try:
        fd = files.open(path)
    except FileNotFoundError:
        fd = -1
    if fd >= 0:
        try:
            if _record_slot(files, fd, position):
                files.datasync(fd)
                return
        finally:
            files.close(fd)
    _create_position(files, directory, position)
    dir_fd = files.open_dir(directory)
    try:
        files.fsync(dir_fd)
    finally:
        files.close(dir_fd)
