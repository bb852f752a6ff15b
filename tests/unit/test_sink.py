"""streams.sink: safe state directories, exact bytes, durable positions, recovery (docs/architecture.md).

Everything runs against real files under ``tmp_path``; a "restart" is a new ``FileSink`` over
the same root, and "another worker" is a second ``FileSink`` instance. Faults are real ones
(a directory where a file should be, a read-only file), except one injected EIO: nothing in
the file system can fail an append to a position log that already exists.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from streams.core.records import MAX_SESSION_ID_BYTES, SinkLine, session_id_problem
from streams.errors import SinkError
from streams.sink.fileio import OS_FILES, OsFiles, StrPath
from streams.sink.files import FILE_NAME, FileSink, WriteResult
from streams.sink.position import (
    POSITION_NAME,
    SLOT_BYTES,
    SinkPosition,
    position_slot,
    read_position,
    write_position,
)
from streams.sink.positionlog import LOG_DIR, read_recorded

SOURCE = "bus-events:0"
TS0 = 1_795_556_444_000_000


def text(session_id: str, offset: int, source: str = SOURCE) -> bytes:
    """A distinct, complete JSONL line per (session, source, offset)."""
    return json.dumps({"session": session_id, "source": source, "offset": offset}).encode() + b"\n"


def line(session_id: str, offset: int, source: str = SOURCE) -> SinkLine:
    return SinkLine(session_id, text(session_id, offset, source), source, offset, TS0 + offset)


def lines(session_id: str, *offsets: int, source: str = SOURCE) -> list[SinkLine]:
    return [line(session_id, o, source) for o in offsets]


def expected(session_id: str, *offsets: int, source: str = SOURCE) -> bytes:
    return b"".join(text(session_id, o, source) for o in offsets)


def data_file(root: Path, session_id: str) -> Path:
    return root / session_id / FILE_NAME


def position_file(root: Path, session_id: str) -> Path:
    return root / session_id / POSITION_NAME


def log_file(root: Path, source: str = SOURCE) -> Path:
    """The position log of an output partition."""
    topic, _, partition = source.rpartition(":")
    return root / LOG_DIR / f"{topic}-{partition}.log"


def recorded(root: Path, session_id: str) -> dict[str, Any]:
    """The session's recorded position (its position file and the logs), as JSON."""
    position = read_recorded(root, session_id)
    assert position is not None
    result: dict[str, Any] = json.loads(position.to_json())
    del result["seq"]
    return result


def durable(sink: FileSink, items: Iterable[SinkLine]) -> WriteResult:
    """A batch written, then a checkpoint (what the source does before it commits)."""
    result = sink.write(items)
    sink.checkpoint()
    return result


def restarted(root: Path, **kwargs: Any) -> FileSink:
    """A new worker over the same root, after its partitions were assigned."""
    sink = FileSink(root, **kwargs)
    sink.recover(owns=lambda session_id: True)
    return sink


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "state"


# -- session ids -----------------------------------------------------------------------------

SAFE_IDS = [
    "s-42",
    "session_001",
    "café",
    "a" * MAX_SESSION_ID_BYTES,
    "é" * 100,  # 100 characters, exactly 200 bytes
    "€" * 66 + "é",  # 198 + 2 = 200 bytes
    "...",  # not a relative path component, just a name
    ".hidden",
    "with space",
]

UNSAFE_IDS: list[tuple[str, str]] = [
    ("", "empty"),
    (".", "relative path component"),
    ("..", "relative path component"),
    ("a/b", "path separator"),
    ("/abs", "path separator"),
    ("..\\x", "path separator"),
    ("a\\b", "path separator"),
    ("../escape", "path separator"),
    ("a\x00b", "U+0000"),
    *[(f"a{chr(c)}b", f"U+{c:04X}") for c in range(0x01, 0x20)],
    ("a\x7fb", "U+007F"),
    # C1 controls (U+0080..U+009F) are control characters too (issue: they were accepted).
    *[(f"a{chr(c)}b", f"U+{c:04X}") for c in range(0x80, 0xA0)],
    (".faust", "reserved"),  # the worker's data directory under the state root
    ("a" * (MAX_SESSION_ID_BYTES + 1), "201 bytes"),
    ("a" * 199 + "é", "201 bytes"),  # 200 characters, the last one crosses 200 bytes
    ("é" * 100 + "a", "201 bytes"),
    ("€" * 67, "201 bytes"),
    ("\ud800", "surrogate"),
    ("a\udfffb", "surrogate"),
    ("\ud83d\ude00", "surrogate"),  # a surrogate *pair* as two code points is still not UTF-8
]


def _id(value: object) -> str:
    return ascii(value)[:40]


@pytest.mark.parametrize("session_id", SAFE_IDS, ids=_id)
def test_ordinary_session_ids_have_no_problem(session_id: str) -> None:
    assert session_id_problem(session_id) is None


@pytest.mark.parametrize(("session_id", "reason"), UNSAFE_IDS, ids=_id)
def test_unsafe_session_ids_have_a_reason(session_id: str, reason: str) -> None:
    problem = session_id_problem(session_id)
    assert problem is not None
    assert reason in problem


@pytest.mark.parametrize(("session_id", "reason"), UNSAFE_IDS, ids=_id)
def test_directory_refuses_unsafe_session_ids(root: Path, session_id: str, reason: str) -> None:
    sink = FileSink(root)
    with pytest.raises(SinkError, match="refusing state directory") as info:
        sink.directory(session_id)
    assert reason in str(info.value)


@pytest.mark.parametrize(("session_id", "reason"), UNSAFE_IDS, ids=_id)
def test_write_with_unsafe_session_id_creates_nothing(
    tmp_path: Path, root: Path, session_id: str, reason: str
) -> None:
    root.mkdir()
    (tmp_path / "outside").mkdir()
    sink = FileSink(root / "inner")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    item = SinkLine(session_id, b'{"x":1}\n', SOURCE, 0, TS0)
    with pytest.raises(SinkError, match="refusing state directory"):
        sink.write([item])
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("session_id", SAFE_IDS, ids=_id)
def test_directory_of_a_safe_id_is_a_child_of_the_resolved_root(
    tmp_path: Path, session_id: str
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    sink = FileSink(tmp_path / "link" / "sub" / ".." / "state")
    resolved = (tmp_path / "real" / "state").resolve()
    assert sink.root == resolved
    path = sink.directory(session_id)
    assert path.parent == resolved
    assert path.name == session_id


def test_write_to_a_safe_unicode_session_lands_under_the_root(root: Path) -> None:
    sink = FileSink(root)
    sink.write(lines("café", 0))
    assert sorted(p.name for p in root.iterdir()) == ["café"]
    assert data_file(root, "café").read_bytes() == expected("café", 0)


# -- write -----------------------------------------------------------------------------------


def test_write_appends_each_sessions_lines_in_order(root: Path) -> None:
    sink = FileSink(root)
    batch = [line("s1", 0), line("s2", 1), line("s1", 2), line("s2", 3), line("s1", 4)]

    result = sink.write(batch)

    assert isinstance(result, WriteResult)
    assert result.appended == 5
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 2, 4)
    assert data_file(root, "s2").read_bytes() == expected("s2", 1, 3)
    s1_size = len(expected("s1", 0, 2, 4))
    s2_size = len(expected("s2", 1, 3))
    assert result.positions == {
        "s1": SinkPosition(size=s1_size, entries=3, offsets={SOURCE: 4}, last_ts_us=TS0 + 4),
        "s2": SinkPosition(size=s2_size, entries=2, offsets={SOURCE: 3}, last_ts_us=TS0 + 3),
    }


def test_lines_are_visible_at_once_and_recorded_at_the_checkpoint(root: Path) -> None:
    sink = FileSink(root)
    sink.write(lines("s1", 7, 8, 9))

    assert data_file(root, "s1").read_bytes() == expected("s1", 7, 8, 9)  # readable now
    assert not position_file(root, "s1").exists()  # recorded at the checkpoint

    result = sink.checkpoint()

    size = len(expected("s1", 7, 8, 9))
    assert result.positions["s1"] == SinkPosition(size, 3, {SOURCE: 9}, TS0 + 9)
    assert result.lag_seconds is not None and result.lag_seconds >= 0
    # Recorded in the output partition's log, not in the state directory.
    assert [p.name for p in (root / "s1").iterdir()] == [FILE_NAME]
    assert [p.name for p in (root / LOG_DIR).iterdir()] == ["bus-events-0.log"]
    assert FILE_NAME == "pending_escalations.jsonl"
    assert recorded(root, "s1") == {
        "size": size,
        "entries": 3,
        "offsets": {SOURCE: 9},
        "last_ts_us": TS0 + 9,
    }
    assert sink.checkpoint().positions == {}  # nothing new: nothing recorded


def test_a_checkpoint_costs_two_syncs_whatever_the_number_of_sessions(root: Path) -> None:
    # One syncfs for the data, one fdatasync per output partition's log written.
    calls: list[str] = []

    class Counting(OsFiles):
        def syncfs(self, fd: int) -> None:
            calls.append("syncfs")
            super().syncfs(fd)

        def datasync(self, fd: int) -> None:
            calls.append("fdatasync")
            super().datasync(fd)

        def fsync(self, fd: int) -> None:
            calls.append("fsync")
            super().fsync(fd)

    sink = FileSink(root, files=Counting())
    sink.write([line(f"s{n:03d}", 0) for n in range(200)])
    sink.checkpoint()
    # The first one also makes the new log's directory entries durable.
    assert calls == ["syncfs", "fdatasync", "fsync", "fsync"]
    calls.clear()
    for offset in range(1, 5):
        sink.write([line(f"s{n:03d}", offset) for n in range(200)])
    sink.checkpoint()

    assert calls == ["syncfs", "fdatasync"]
    assert sink.checkpoints.sync_calls == 6
    assert all(recorded(root, f"s{n:03d}")["entries"] == 5 for n in range(200))


def test_without_syncfs_each_written_file_is_synced(root: Path) -> None:
    synced: list[str] = []

    class NoSyncfs(OsFiles):
        def syncfs(self, fd: int) -> None:
            raise OSError(errno.ENOSYS, "no syncfs here")

        def datasync(self, fd: int) -> None:
            synced.append("fdatasync")
            super().datasync(fd)

        def fsync(self, fd: int) -> None:
            synced.append("fsync")
            super().fsync(fd)

    sink = FileSink(root, files=NoSyncfs())
    sink.write([*lines("s1", 0), *lines("s2", 1)])
    sink.checkpoint()

    # The data file of each session, the new directories' entries, then the log.
    assert synced.count("fdatasync") == 3 and synced.count("fsync") >= 3
    assert recorded(root, "s1")["entries"] == recorded(root, "s2")["entries"] == 1


def test_a_failed_sync_is_not_retried_and_stops_the_worker(root: Path) -> None:
    class FailingSync(OsFiles):
        def syncfs(self, fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error (injected)")

    sink = FileSink(root, files=FailingSync())
    sink.write(lines("s1", 0))
    with pytest.raises(SinkError, match="durable") as info:
        sink.checkpoint()
    assert not isinstance(info.value, OSError)  # the stage retries OSError only
    assert read_recorded(root, "s1") is None  # nothing recorded: nothing committed


def test_without_fsync_the_files_and_positions_are_the_same(root: Path, tmp_path: Path) -> None:
    unsynced, synced = FileSink(root, fsync=False), FileSink(tmp_path / "synced")
    for sink in (unsynced, synced):
        durable(sink, [*lines("s1", 0, 1), *lines("s2", 2)])
        durable(sink, [*lines("s1", 1, 3), *lines("s2", 4)])

    for session in ("s1", "s2"):
        assert data_file(root, session).read_bytes() == (
            data_file(tmp_path / "synced", session).read_bytes()
        )
        assert recorded(root, session) == recorded(tmp_path / "synced", session)
    assert unsynced.checkpoints.sync_calls == 0
    assert restarted(root).known_positions()["s1"].entries == 3  # a restart reads them


def test_later_writes_append_after_earlier_ones(root: Path) -> None:
    sink = FileSink(root)
    durable(sink, lines("s1", 0, 1))
    result = durable(sink, lines("s1", 2))

    assert result.appended == 1
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2)
    assert recorded(root, "s1")["entries"] == 3
    assert recorded(root, "s1")["size"] == len(expected("s1", 0, 1, 2))


def test_writing_the_same_lines_again_appends_nothing(root: Path) -> None:
    sink = FileSink(root)
    batch = [*lines("s1", 0, 1, 2), *lines("s2", 5)]
    durable(sink, batch)
    jsonl = data_file(root, "s1").read_bytes()
    log = log_file(root).read_bytes()

    again = durable(sink, batch)

    assert again.appended == 0
    assert again.positions == {}
    assert data_file(root, "s1").read_bytes() == jsonl
    assert log_file(root).read_bytes() == log  # nothing new to record
    assert data_file(root, "s2").read_bytes() == expected("s2", 5)


def test_repeats_after_a_restart_append_nothing(root: Path) -> None:
    durable(FileSink(root), lines("s1", 0, 1, 2))
    result = restarted(root).write(lines("s1", 0, 1, 2))
    assert result.appended == 0
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2)


def test_lines_at_or_below_the_recorded_offset_are_skipped_newer_ones_appended(
    root: Path,
) -> None:
    sink = FileSink(root)
    durable(sink, lines("s1", 10, 11, 12))

    result = durable(sink, lines("s1", 9, 11, 12, 13, 14))

    assert result.appended == 2
    assert data_file(root, "s1").read_bytes() == expected("s1", 10, 11, 12, 13, 14)
    assert recorded(root, "s1")["offsets"] == {SOURCE: 14}
    assert recorded(root, "s1")["entries"] == 5
    assert recorded(root, "s1")["last_ts_us"] == TS0 + 14


def test_each_source_partition_is_tracked_separately(root: Path) -> None:
    sink = FileSink(root)
    durable(sink, lines("s1", 50, 51, source="bus-events:0"))

    result = durable(
        sink,
        [
            *lines("s1", 0, 1, source="bus-events:1"),  # low offsets, but another partition
            *lines("s1", 51, source="bus-events:0"),  # a repeat
        ],
    )

    assert result.appended == 2
    assert data_file(root, "s1").read_bytes() == (
        expected("s1", 50, 51, source="bus-events:0") + expected("s1", 0, 1, source="bus-events:1")
    )
    assert recorded(root, "s1")["offsets"] == {"bus-events:0": 51, "bus-events:1": 1}
    assert recorded(root, "s1")["entries"] == 4

    again = restarted(root).write(lines("s1", 1, source="bus-events:1"))
    assert again.appended == 0


def test_recovering_an_untouched_root_creates_nothing(root: Path) -> None:
    sink = restarted(root)
    assert sink.known_positions() == {}
    assert not root.exists()


# -- positions -------------------------------------------------------------------------------

GARBAGE = [
    b"",
    b"not json",
    b"\xff\xfe\x00",
    b"null",
    b"[]",
    b'"size"',
    b'{"size": 1}',
    b'{"size": "x", "entries": 0, "offsets": {}}',
    b'{"size": 0, "entries": 0, "offsets": []}',
    b'{"size": 0, "entries": 0, "offsets": {"bus-events:0": "x"}}',
    b'{"size": 0, "entries": 0, "offsets": {"bus-events:0": null}}',
    b'{"size": -1, "entries": 0, "offsets": {}}',
]


@pytest.mark.parametrize("garbage", GARBAGE, ids=_id)
def test_garbage_position_json_is_corruption_naming_it(root: Path, garbage: bytes) -> None:
    durable(FileSink(root), lines("s1", 0, 1))
    good = data_file(root, "s1").read_bytes()
    slot = position_slot(garbage).ljust(SLOT_BYTES, b"\0")  # intact checksums, bad content
    position_file(root, "s1").write_bytes(slot + slot)

    sink = restarted(root)

    assert str(position_file(root, "s1")) in sink.corrupt_sessions()["s1"]
    assert data_file(root, "s1").read_bytes() == good
    assert sink.write(lines("s1", 2)).corrupt.keys() == {"s1"}
    assert data_file(root, "s1").read_bytes() == good


@pytest.mark.parametrize(
    "raw",
    [b"", b'{"size": 0}', bytes(SLOT_BYTES), bytes(2 * SLOT_BYTES), bytes(2 * SLOT_BYTES + 1)],
    ids=["empty", "old-json", "one-slot", "two-blank-slots", "odd-size"],
)
def test_a_position_file_without_an_intact_slot_is_corruption(root: Path, raw: bytes) -> None:
    durable(FileSink(root), lines("s1", 0, 1))
    position_file(root, "s1").write_bytes(raw)

    corrupt = restarted(root).corrupt_sessions()

    assert "unreadable sink position" in corrupt["s1"]
    assert str(position_file(root, "s1")) in corrupt["s1"]


@pytest.mark.parametrize(
    "position",
    [
        SinkPosition(),
        SinkPosition(10, 1, {"bus-events:0": 4}, TS0, 3),
        SinkPosition(2**40, 10**6, {"b:3": 7, "a:10": 2**31, "a:2": 0}, None, 10**9),
        SinkPosition(5, 1, {'odd"name\\:1': 1}, 0, 1),
    ],
)
def test_a_position_is_written_as_sorted_json_and_read_back(position: SinkPosition) -> None:
    as_json = {
        "entries": position.entries,
        "last_ts_us": position.last_ts_us,
        "offsets": dict(position.offsets),
        "seq": position.seq,
        "size": position.size,
    }
    assert position.to_json() == json.dumps(as_json, sort_keys=True).encode()
    read = SinkPosition.from_json(position.to_json(), "p")
    assert (read, read.seq) == (position, position.seq)


def test_a_position_file_alternates_between_its_two_slots_in_place(root: Path) -> None:
    # Position files are written by `sink rebuild` and when a file is adopted.
    directory = root / "s1"
    directory.mkdir(parents=True)
    write_position(OS_FILES, directory, SinkPosition(1, 1, {}, None, 1))
    inode = position_file(root, "s1").stat().st_ino
    for seq in range(2, 6):
        write_position(OS_FILES, directory, SinkPosition(seq, seq, {}, None, seq))
        raw = position_file(root, "s1").read_bytes()
        newest = read_position(position_file(root, "s1"))
        assert newest is not None and newest.entries == seq
        slot = raw[(seq % 2) * SLOT_BYTES : (seq % 2 + 1) * SLOT_BYTES]
        assert b'"entries": %d' % seq in slot
        assert b'"entries": %d' % (seq - 1) in raw  # the other slot: one step older

    assert position_file(root, "s1").stat().st_ino == inode  # no renames after the first
    assert len(raw) == 2 * SLOT_BYTES


def test_each_checkpoint_appends_one_frame_to_the_partitions_log(root: Path) -> None:
    sink = FileSink(root)
    durable(sink, [*lines("s1", 0), *lines("s2", 1)])
    inode = log_file(root).stat().st_ino
    sizes = [log_file(root).stat().st_size]
    for offset in range(2, 6):
        durable(sink, [*lines("s1", offset), *lines("s2", offset)])
        sizes.append(log_file(root).stat().st_size)

    assert log_file(root).stat().st_ino == inode  # appended in place
    assert sizes == sorted(sizes) and len(set(sizes)) == 5
    assert sink.logs.frames == 5
    assert recorded(root, "s1")["entries"] == recorded(root, "s2")["entries"] == 5


def test_a_torn_last_frame_falls_back_to_the_one_before_and_the_replay_repairs(
    root: Path,
) -> None:
    durable(FileSink(root), lines("s1", 0, 1))
    before = log_file(root).stat().st_size
    durable(restarted(root), lines("s1", 2, 3))
    raw = bytearray(log_file(root).read_bytes())
    raw[before + 20] ^= 0xFF  # a crash mid-append
    log_file(root).write_bytes(bytes(raw))

    sink = restarted(root)
    assert sink.known_positions()["s1"].entries == 2
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2, 3)  # kept, not cut
    assert durable(sink, lines("s1", 2, 3)).appended == 2  # the replay writes them over
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2, 3)
    assert recorded(root, "s1")["entries"] == 4
    assert log_file(root).read_bytes() != bytes(raw)  # the torn frame cut, a whole one appended


def test_the_logs_of_many_output_partitions_merge_into_one_position(root: Path) -> None:
    sink = FileSink(root)
    sources = [f"bus-events:{p}" for p in range(300)]  # offsets of 300 source partitions
    for source in sources:
        durable(sink, lines("s1", 1, source=source))

    assert len(list((root / LOG_DIR).iterdir())) == 300
    position = read_recorded(root, "s1")
    assert position is not None
    assert position.entries == 300
    assert position.offsets == {source: 1 for source in sources}


# -- another worker wrote in between ---------------------------------------------------------


def test_recover_picks_up_lines_another_worker_wrote(root: Path) -> None:
    first = FileSink(root)
    durable(first, lines("s1", 0, 1))

    other = restarted(root)  # the session moved to another worker, which wrote more
    durable(other, lines("s1", 2, 3))

    first.recover(lambda session: True)  # partitions reassigned back to the first worker
    result = durable(first, lines("s1", 2, 3, 4))

    assert result.appended == 1
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2, 3, 4)
    assert recorded(root, "s1") == {
        "size": len(expected("s1", 0, 1, 2, 3, 4)),
        "entries": 5,
        "offsets": {SOURCE: 4},
        "last_ts_us": TS0 + 4,
    }


def test_lines_another_writer_appended_meanwhile_are_not_doubled(root: Path) -> None:
    # A worker that has not noticed it lost a partition, and its successor: both write.
    old, new = FileSink(root), FileSink(root)
    durable(old, lines("s1", 0, 1))
    new.recover(lambda session: True)
    new.write(lines("s1", 2, 3))  # not yet checkpointed
    old.write(lines("s1", 2, 3, 4))  # the old one catches up: 2 and 3 compared, 4 appended
    new.write(lines("s1", 4, 5))
    old.checkpoint()
    new.checkpoint()

    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2, 3, 4, 5)
    assert recorded(root, "s1")["entries"] == 6


# -- failed writes are repaired --------------------------------------------------------------


def _break_jsonl(path: Path) -> bytes:
    """Make opening ``path`` for writing fail for real; returns its bytes for ``_repair``."""
    content = path.read_bytes()
    if os.geteuid() == 0:  # root ignores file modes: put a directory where the file was
        path.unlink()
        path.mkdir()
        (path / "blocker").write_bytes(b"")
    else:
        path.chmod(0o444)
    return content


def _repair(path: Path, content: bytes) -> None:
    if path.is_dir():
        shutil.rmtree(path)
        path.write_bytes(content)
    else:
        path.chmod(0o644)


def test_a_write_that_cannot_open_the_file_succeeds_once_the_fault_is_cleared(
    root: Path,
) -> None:
    durable(FileSink(root), lines("s1", 0, 1))
    sink = restarted(root)  # nothing cached: the next write opens the file
    path = data_file(root, "s1")
    position = read_recorded(root, "s1")
    content = _break_jsonl(path)

    with pytest.raises(OSError):
        durable(sink, lines("s1", 2, 3))
    assert read_recorded(root, "s1") == position

    _repair(path, content)
    sink = restarted(root)
    result = durable(sink, lines("s1", 2, 3))

    assert result.appended == 2
    assert path.read_bytes() == expected("s1", 0, 1, 2, 3)
    assert recorded(root, "s1")["entries"] == 4


class _FailingSlots(OsFiles):
    """Fails every write to a position log."""

    def __init__(self) -> None:
        self.failing = False
        self.position_fds: set[int] = set()

    def open(self, path: StrPath, *, create: bool = False, readonly: bool = False) -> int:
        fd = super().open(path, create=create, readonly=readonly)
        if f"/{LOG_DIR}/" in os.fspath(path):
            self.position_fds.add(fd)
        return fd

    def close(self, fd: int) -> None:
        self.position_fds.discard(fd)
        super().close(fd)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        if self.failing and fd in self.position_fds:
            raise OSError(errno.EIO, "Input/output error (injected)")
        return super().pwrite(fd, data, offset)


def test_a_checkpoint_failing_to_record_is_repaired_by_its_retry(root: Path) -> None:
    files = _FailingSlots()
    sink = FileSink(root, files=files)
    durable(sink, lines("s1", 0, 1))
    files.failing = True
    position = read_recorded(root, "s1")
    sink.write(lines("s1", 2, 3))

    with pytest.raises(OSError, match="injected"):
        sink.checkpoint()  # the source does not commit
    assert read_recorded(root, "s1") == position  # not recorded
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2, 3)  # but written

    files.failing = False
    assert sink.checkpoint().positions["s1"].entries == 4  # the stage's retry
    assert recorded(root, "s1")["size"] == len(expected("s1", 0, 1, 2, 3))


def test_a_checkpoint_failing_to_record_is_repaired_after_a_restart(root: Path) -> None:
    files = _FailingSlots()
    sink = FileSink(root, files=files)
    durable(sink, lines("s1", 0, 1))
    files.failing = True
    sink.write(lines("s1", 2, 3))
    with pytest.raises(OSError, match="injected"):
        sink.checkpoint()

    again = restarted(root)  # the worker gave up; the replay starts at the committed offset
    assert again.known_positions()["s1"].entries == 2
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2, 3)  # not cut
    assert durable(again, lines("s1", 2, 3)).appended == 2
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2, 3)
    assert recorded(root, "s1")["entries"] == 4


def test_a_batch_failing_in_its_second_session_is_retried_without_doubles(root: Path) -> None:
    durable(FileSink(root), [*lines("s1", 0), *lines("s2", 1)])
    sink = restarted(root)
    path = data_file(root, "s2")
    content = _break_jsonl(path)
    sink.fds.clear()  # the next write opens the files again
    batch = [*lines("s1", 2), *lines("s2", 3), *lines("s1", 4)]

    with pytest.raises(OSError):
        sink.write(batch)

    _repair(path, content)
    result = durable(sink, batch)

    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 2, 4)
    assert path.read_bytes() == expected("s2", 1, 3)
    assert result.appended == 1  # s1's lines were written by the failed attempt
    assert recorded(root, "s1")["entries"] == 3
    assert recorded(root, "s2")["entries"] == 2


# -- check_root ------------------------------------------------------------------------------


def test_check_root_creates_a_missing_root_and_leaves_nothing_behind(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "state"
    FileSink(root).check_root()
    assert root.is_dir()
    assert list(root.iterdir()) == []


def test_check_root_accepts_an_existing_root_with_sessions(root: Path) -> None:
    durable(FileSink(root), lines("s1", 0))
    FileSink(root).check_root()
    assert sorted(p.name for p in root.iterdir()) == [LOG_DIR, "s1"]
    assert data_file(root, "s1").read_bytes() == expected("s1", 0)


def test_check_root_of_a_regular_file_names_the_variable(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.write_bytes(b"not a directory")

    with pytest.raises(SinkError) as info:
        FileSink(root).check_root()

    assert "ESCALATIONS_STATE_ROOT" in str(info.value)
    assert str(root) in str(info.value)
    assert root.read_bytes() == b"not a directory"


def test_check_root_under_a_regular_file_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(SinkError, match="ESCALATIONS_STATE_ROOT"):
        FileSink(tmp_path / "file" / "state").check_root()


def test_check_root_is_not_broken_by_a_session_named_like_its_probe(root: Path) -> None:
    # ".write-probe" is a safe session id, so bus input can create this state directory;
    # the worker must still start afterwards (bad input never stops the job).
    assert session_id_problem(".write-probe") is None
    durable(FileSink(root), lines(".write-probe", 0))

    FileSink(root).check_root()

    assert data_file(root, ".write-probe").read_bytes() == expected(".write-probe", 0)


def test_two_writers_of_the_same_sessions_in_opposite_orders_never_deadlock(root: Path) -> None:
    # Two sinks on one root stand for a worker that has not yet noticed it lost a partition
    # and its successor: both write the partition's lines (the same ones), each holding one
    # directory lock at a time, each noticing what the other wrote.
    sessions = [f"s{i:02d}" for i in range(12)]
    done: list[str] = []

    def writer(name: str, order: list[str]) -> None:
        sink = FileSink(root)
        for offset in range(40):
            durable(sink, [line(s, offset) for s in order])
        done.append(name)

    threads = [
        threading.Thread(target=writer, args=("a", sessions), daemon=True),
        threading.Thread(target=writer, args=("b", sessions[::-1]), daemon=True),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(done) == ["a", "b"], "a writer is stuck waiting for a directory lock"
    for session in sessions:
        assert data_file(root, session).read_bytes() == expected(session, *range(40))
        assert recorded(root, session)["entries"] == 40


def test_an_older_position_never_overwrites_a_newer_record(root: Path) -> None:
    stale, owner = FileSink(root), FileSink(root)
    durable(stale, lines("s1", 0))
    owner.recover(lambda session: True)
    durable(owner, lines("s1", 1, 2))  # the new owner recorded more, and committed
    stale.write(lines("s1", 1))  # the same bytes again: the file's size does not change
    stale.checkpoint()

    position = read_recorded(root, "s1")
    assert position is not None and position.entries == 3
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2)


def test_the_os_file_layer_is_the_default() -> None:
    assert FileSink(Path("/nonexistent-root")).files is OS_FILES
