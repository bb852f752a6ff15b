"""The position logs' frames: magic, length, CRC-32, then a JSON list of entries
``[session, epoch, size, entries, last_ts_us, seq, offsets]``. A log's first frame holds one entry
of the session "" (never a session id): the file's identity. Parsing tells a torn tail (cut by
the next writer) from a frame that must never be cut (``FrameError``)."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable
from typing import Final

from streams.sink.fileio import FileLayer
from streams.sink.position import SinkPosition

__all__ = ["FrameError", "encode_frame", "header", "log_id", "parse_frames"]

_FRAME_HEAD: Final = struct.Struct(">4sII")
_FRAME_MAGIC: Final = b"ESL1"
#: Enough bytes for a log's first frame (its identity).
_HEADER_READ: Final = 128


def encode_frame(entries: Iterable[tuple[str, SinkPosition]]) -> bytes:
    body = json.dumps(
        [[name, p.epoch, p.size, p.entries, p.last_ts_us, p.seq, p.offsets] for name, p in entries],
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8", "surrogatepass")
    return _FRAME_HEAD.pack(_FRAME_MAGIC, len(body), zlib.crc32(body)) + body


class FrameError(ValueError):
    """A frame that is not a torn tail (which is cut): intact by its checksum but unreadable by
    this version (a newer format during a rolling upgrade), or damaged with intact frames after
    it. Nothing may be cut there: the worker stops, naming the log and the offset."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"a frame at byte {offset} {reason}")
        self.offset, self.reason = offset, reason


def _body_at(raw: bytes | memoryview, at: int) -> bytes | None:
    """The body of the frame at ``at`` if its head and checksum hold, else None."""
    if len(raw) - at < _FRAME_HEAD.size:
        return None
    magic, length, crc = _FRAME_HEAD.unpack_from(raw, at)
    body = bytes(raw[at + _FRAME_HEAD.size : at + _FRAME_HEAD.size + length])
    # An empty body (a head zero-filled past its magic: CRC-32 of nothing is 0) is never
    # written: torn too.
    if magic != _FRAME_MAGIC or not length or len(body) != length or zlib.crc32(body) != crc:
        return None
    return body


def _intact_frame_after(raw: bytes | memoryview, at: int) -> bool:
    data = bytes(raw)
    found = data.find(_FRAME_MAGIC, at + 1)
    while found >= 0:
        if _body_at(data, found) is not None:
            return True
        found = data.find(_FRAME_MAGIC, found + 1)
    return False


def _entries(body: bytes) -> list[tuple[str, SinkPosition]]:
    items = json.loads(body.decode("utf-8", "surrogatepass"))
    return [
        (
            str(name),
            SinkPosition(
                int(size),
                int(count),
                {str(k): int(v) for k, v in offsets.items()},
                None if last_ts is None else int(last_ts),
                int(seq),
                epoch=int(epoch),
            ),
        )
        for name, epoch, size, count, last_ts, seq, offsets in items
    ]


def parse_frames(raw: bytes | memoryview) -> tuple[list[tuple[str, SinkPosition]], int]:
    """The entries of the whole intact frames at the start of ``raw``, and where they end (a
    torn tail ends them). Raises ``FrameError`` for a frame that is not a torn tail."""
    entries: list[tuple[str, SinkPosition]] = []
    at = 0
    while len(raw) - at >= _FRAME_HEAD.size:
        body = _body_at(raw, at)
        if body is None:
            if _intact_frame_after(raw, at):
                raise FrameError(at, "is damaged, and intact frames follow it")
            break  # a torn tail: never synced, nothing committed on it
        try:
            entries.extend(_entries(body))
        except (ValueError, TypeError, AttributeError) as exc:
            raise FrameError(at, f"is intact but unreadable by this version ({exc})") from exc
        at += _FRAME_HEAD.size + len(body)
    return entries, at


def header(log_id: int) -> bytes:
    """A log's first frame: its identity (a random number, new for each file), as an entry of
    the session "" (never a session id; earlier versions read it as one and ignore it)."""
    return encode_frame([("", SinkPosition(epoch=log_id))])


def log_id(files: FileLayer, fd: int) -> int | None:
    """The identity in the log's first frame; None for a log of an earlier version."""
    raw = files.pread(fd, _HEADER_READ, 0)
    body = _body_at(raw, 0)
    if body is None:
        return None
    try:
        first = _entries(body)
    except (ValueError, TypeError, AttributeError):
        return None
    return first[0][1].epoch if len(first) == 1 and first[0][0] == "" else None
