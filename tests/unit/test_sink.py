"""streams.sink: safe state directories, exact bytes, durable positions, recovery (docs/architecture.md).

Everything runs against real files under ``tmp_path``; a "restart" is a new ``FileSink`` over
the same root, and "another worker" is a second ``FileSink`` instance. Faults are real ones
(a directory where a file should be, a read-only file), except one injected EIO: nothing in
the file system can fail the in-place write of a position slot that already exists.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from streams.core.records import MAX_SESSION_ID_BYTES, SinkLine, session_id_problem
from streams.errors import SinkCorruptionError, SinkError
from streams.sink import position as sink_module
from streams.sink.files import FILE_NAME, LOCK_NAME, FileSink, WriteResult
from streams.sink.position import (
    POSITION_NAME,
    SLOT_BYTES,
    SinkPosition,
    position_slot,
    read_position,
)

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


def recorded(root: Path, session_id: str) -> dict[str, Any]:
    """The newest position in the session's position file, as the JSON it holds."""
    position = read_position(position_file(root, session_id))
    assert position is not None
    result: dict[str, Any] = json.loads(position.to_json())
    del result["seq"]
    return result


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


def test_position_file_next_to_the_jsonl_records_size_entries_offsets_and_ts(
    root: Path,
) -> None:
    sink = FileSink(root)
    sink.write(lines("s1", 7, 8, 9))

    assert sorted(p.name for p in (root / "s1").iterdir()) == sorted(
        [FILE_NAME, POSITION_NAME, LOCK_NAME]
    )
    assert POSITION_NAME == ".pending_escalations.position"
    assert FILE_NAME == "pending_escalations.jsonl"
    assert recorded(root, "s1") == {
        "size": len(expected("s1", 7, 8, 9)),
        "entries": 3,
        "offsets": {SOURCE: 9},
        "last_ts_us": TS0 + 9,
    }
    assert sink.position("s1") == SinkPosition(
        size=len(expected("s1", 7, 8, 9)), entries=3, offsets={SOURCE: 9}, last_ts_us=TS0 + 9
    )


def test_without_fsync_the_files_and_positions_are_the_same(root: Path, tmp_path: Path) -> None:
    unsynced, synced = FileSink(root, fsync=False), FileSink(tmp_path / "synced")
    for sink in (unsynced, synced):
        sink.write([*lines("s1", 0, 1), *lines("s2", 2)])
        sink.write([*lines("s1", 1, 3), *lines("s2", 4)])

    for session in ("s1", "s2"):
        assert data_file(root, session).read_bytes() == (
            data_file(tmp_path / "synced", session).read_bytes()
        )
        assert recorded(root, session) == recorded(tmp_path / "synced", session)
    assert FileSink(root).position("s1").entries == 3  # a restart reads what was written


def test_later_writes_append_after_earlier_ones(root: Path) -> None:
    sink = FileSink(root)
    sink.write(lines("s1", 0, 1))
    result = sink.write(lines("s1", 2))

    assert result.appended == 1
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2)
    assert recorded(root, "s1")["entries"] == 3
    assert recorded(root, "s1")["size"] == len(expected("s1", 0, 1, 2))


def test_writing_the_same_lines_again_appends_nothing(root: Path) -> None:
    sink = FileSink(root)
    batch = [*lines("s1", 0, 1, 2), *lines("s2", 5)]
    sink.write(batch)
    jsonl = data_file(root, "s1").read_bytes()
    position = position_file(root, "s1").read_bytes()

    again = sink.write(batch)

    assert again.appended == 0
    assert again.positions == {}
    assert data_file(root, "s1").read_bytes() == jsonl
    assert position_file(root, "s1").read_bytes() == position
    assert data_file(root, "s2").read_bytes() == expected("s2", 5)


def test_repeats_after_a_restart_append_nothing(root: Path) -> None:
    FileSink(root).write(lines("s1", 0, 1, 2))
    result = FileSink(root).write(lines("s1", 0, 1, 2))
    assert result.appended == 0
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2)


def test_lines_at_or_below_the_recorded_offset_are_skipped_newer_ones_appended(
    root: Path,
) -> None:
    sink = FileSink(root)
    sink.write(lines("s1", 10, 11, 12))

    result = sink.write(lines("s1", 9, 11, 12, 13, 14))

    assert result.appended == 2
    assert data_file(root, "s1").read_bytes() == expected("s1", 10, 11, 12, 13, 14)
    assert recorded(root, "s1")["offsets"] == {SOURCE: 14}
    assert recorded(root, "s1")["entries"] == 5
    assert recorded(root, "s1")["last_ts_us"] == TS0 + 14


def test_each_source_partition_is_tracked_separately(root: Path) -> None:
    sink = FileSink(root)
    sink.write(lines("s1", 50, 51, source="bus-events:0"))

    result = sink.write(
        [
            *lines("s1", 0, 1, source="bus-events:1"),  # low offsets, but another partition
            *lines("s1", 51, source="bus-events:0"),  # a repeat
        ]
    )

    assert result.appended == 2
    assert data_file(root, "s1").read_bytes() == (
        expected("s1", 50, 51, source="bus-events:0") + expected("s1", 0, 1, source="bus-events:1")
    )
    assert recorded(root, "s1")["offsets"] == {"bus-events:0": 51, "bus-events:1": 1}
    assert recorded(root, "s1")["entries"] == 4

    again = FileSink(root).write(lines("s1", 1, source="bus-events:1"))
    assert again.appended == 0


def test_position_of_an_untouched_session_is_empty_and_creates_nothing(root: Path) -> None:
    sink = FileSink(root)
    assert sink.position("never") == SinkPosition()
    assert not (root / "never").exists()


# -- recovery after a restart ----------------------------------------------------------------

TORN = b'{"session": "s1", "source": "bus-events:0", "off'


def _torn(root: Path, session_id: str = "s1") -> bytes:
    """Two recorded lines, then a partial line past the recorded size."""
    FileSink(root).write(lines(session_id, 0, 1))
    good = data_file(root, session_id).read_bytes()
    with open(data_file(root, session_id), "ab") as f:
        f.write(TORN)
    return good


def test_torn_tail_is_truncated_by_position(root: Path) -> None:
    good = _torn(root)
    sink = FileSink(root)

    assert sink.position("s1").size == len(good)
    assert data_file(root, "s1").read_bytes() == good


def test_torn_tail_is_truncated_by_write(root: Path) -> None:
    _torn(root)
    result = FileSink(root).write(lines("s1", 1, 2))

    assert result.appended == 1
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2)
    assert recorded(root, "s1")["size"] == len(expected("s1", 0, 1, 2))


def test_torn_tail_is_truncated_by_recover(root: Path) -> None:
    good = _torn(root)
    (root / "not-a-directory.txt").write_bytes(b"ignored")

    checked = FileSink(root).recover(owns=lambda session_id: True)

    assert checked == 1
    assert data_file(root, "s1").read_bytes() == good
    assert (root / "not-a-directory.txt").read_bytes() == b"ignored"


def test_a_complete_but_unrecorded_line_is_truncated(root: Path) -> None:
    FileSink(root).write(lines("s1", 0, 1))
    with open(data_file(root, "s1"), "ab") as f:
        f.write(text("s1", 2))  # appended and fsynced, but the position was never recorded

    sink = FileSink(root)
    assert sink.position("s1").entries == 2
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1)

    # the replay writes it exactly once
    assert sink.write(lines("s1", 2)).appended == 1
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2)


def test_recover_touches_only_the_sessions_it_owns(root: Path) -> None:
    good1 = _torn(root, "s1")
    good2 = _torn(root, "s2")
    sink = FileSink(root)

    checked = sink.recover(owns=lambda session_id: session_id == "s1")

    assert checked == 1
    assert data_file(root, "s1").read_bytes() == good1
    assert data_file(root, "s2").read_bytes() == good2 + TORN  # not ours: left alone

    sink.position("s2")  # first touch of s2 repairs it
    assert data_file(root, "s2").read_bytes() == good2


def test_recover_asks_owns_only_about_safe_directory_names(root: Path) -> None:
    FileSink(root).write(lines("s1", 0))
    (root / "s2").mkdir()
    asked: list[str] = []

    def owns(session_id: str) -> bool:
        asked.append(session_id)
        return False

    assert FileSink(root).recover(owns) == 0
    assert sorted(asked) == ["s1", "s2"]


def test_recover_of_a_missing_root_checks_nothing(root: Path) -> None:
    assert FileSink(root).recover(owns=lambda session_id: True) == 0


def test_file_shorter_than_recorded_raises_corruption_naming_the_file(root: Path) -> None:
    FileSink(root).write(lines("s1", 0, 1))
    path = data_file(root, "s1")
    short = path.read_bytes()[:-5]
    path.write_bytes(short)
    sink = FileSink(root)

    with pytest.raises(SinkCorruptionError) as info:
        sink.position("s1")
    assert str(path) in str(info.value)
    assert str(len(short)) in str(info.value)

    # Writing skips the damaged session (its entries stay on the output topic for
    # `sink rebuild`) and carries on with the others.
    result = sink.write(lines("s1", 2) + lines("s2", 0))
    assert str(path) in result.corrupt["s1"] and "sink rebuild" in result.corrupt["s1"]
    assert path.read_bytes() == short  # nothing was written over the damage
    assert list(result.positions) == ["s2"]
    assert sink.corrupt_sessions() == result.corrupt


def test_deleted_jsonl_with_a_position_raises_corruption(root: Path) -> None:
    FileSink(root).write(lines("s1", 0))
    path = data_file(root, "s1")
    path.unlink()

    with pytest.raises(SinkCorruptionError) as info:
        FileSink(root).position("s1")
    assert str(path) in str(info.value)
    assert not path.exists()


def test_corruption_in_one_directory_is_reported_by_recover(root: Path) -> None:
    FileSink(root).write(lines("s1", 0, 1) + lines("s2", 0))
    data_file(root, "s1").write_bytes(b"")
    sink = FileSink(root)
    assert sink.recover(owns=lambda session_id: True) == 2
    assert str(data_file(root, "s1")) in sink.corrupt_sessions()["s1"]
    assert "s2" not in sink.corrupt_sessions()


def test_jsonl_without_a_position_file_is_adopted(root: Path) -> None:
    content = b'{"a":1}\n{"a":2}\n{"a":3}\n'
    (root / "s1").mkdir(parents=True)
    data_file(root, "s1").write_bytes(content)

    sink = FileSink(root)
    position = sink.position("s1")

    assert position == SinkPosition(size=len(content), entries=3, offsets={}, last_ts_us=None)
    assert data_file(root, "s1").read_bytes() == content
    assert recorded(root, "s1") == {
        "size": len(content),
        "entries": 3,
        "offsets": {},
        "last_ts_us": None,
    }

    sink.write(lines("s1", 0))
    assert data_file(root, "s1").read_bytes() == content + expected("s1", 0)
    assert recorded(root, "s1")["entries"] == 4


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
def test_garbage_position_json_raises_corruption_naming_it(root: Path, garbage: bytes) -> None:
    FileSink(root).write(lines("s1", 0, 1))
    good = data_file(root, "s1").read_bytes()
    slot = position_slot(garbage).ljust(SLOT_BYTES, b"\0")  # intact checksums, bad content
    position_file(root, "s1").write_bytes(slot + slot)

    with pytest.raises(SinkCorruptionError) as info:
        FileSink(root).position("s1")
    assert str(position_file(root, "s1")) in str(info.value)
    assert data_file(root, "s1").read_bytes() == good


@pytest.mark.parametrize(
    "raw",
    [b"", b'{"size": 0}', bytes(SLOT_BYTES), bytes(2 * SLOT_BYTES), bytes(2 * SLOT_BYTES + 1)],
    ids=["empty", "old-json", "one-slot", "two-blank-slots", "odd-size"],
)
def test_a_position_file_without_an_intact_slot_raises_corruption(root: Path, raw: bytes) -> None:
    FileSink(root).write(lines("s1", 0, 1))
    position_file(root, "s1").write_bytes(raw)

    with pytest.raises(SinkCorruptionError, match="unreadable sink position") as info:
        FileSink(root).position("s1")
    assert str(position_file(root, "s1")) in str(info.value)


def test_positions_alternate_between_the_two_slots_in_place(root: Path) -> None:
    sink = FileSink(root)
    sink.write(lines("s1", 0))
    inode = position_file(root, "s1").stat().st_ino
    for offset in range(1, 5):
        sink.write(lines("s1", offset))
        raw = position_file(root, "s1").read_bytes()
        newest = read_position(position_file(root, "s1"))
        assert newest is not None and newest.entries == offset + 1
        slot = raw[(newest.seq % 2) * SLOT_BYTES : (newest.seq % 2 + 1) * SLOT_BYTES]
        assert b'"entries": %d' % (offset + 1) in slot
        assert b'"entries": %d' % offset in raw  # the other slot: one step older

    assert position_file(root, "s1").stat().st_ino == inode  # no renames after the first
    assert len(raw) == 2 * SLOT_BYTES


def test_a_torn_newest_slot_falls_back_to_the_older_one_and_the_replay_repairs(
    root: Path,
) -> None:
    FileSink(root).write(lines("s1", 0, 1))
    FileSink(root).write(lines("s1", 2, 3))
    newest = read_position(position_file(root, "s1"))
    assert newest is not None
    raw = bytearray(position_file(root, "s1").read_bytes())
    raw[(newest.seq % 2) * SLOT_BYTES + 20] ^= 0xFF  # a crash mid-slot-write
    position_file(root, "s1").write_bytes(bytes(raw))

    restarted = FileSink(root)
    assert restarted.position("s1").entries == 2
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1)  # tail truncated
    assert restarted.write(lines("s1", 2, 3)).appended == 2
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2, 3)


def test_a_position_too_big_for_a_slot_grows_the_slots(root: Path) -> None:
    sink = FileSink(root)
    sources = [f"bus-events:{p}" for p in range(300)]  # offsets of 300 source partitions
    for source in sources:
        sink.write(lines("s1", 1, source=source))

    raw = position_file(root, "s1").read_bytes()
    assert len(raw) > 2 * SLOT_BYTES and len(raw) % (2 * SLOT_BYTES) == 0
    position = FileSink(root).position("s1")
    assert position.entries == 300
    assert position.offsets == {source: 1 for source in sources}


# -- recover: another worker wrote in between -------------------------------------------------


def test_forget_picks_up_lines_another_worker_wrote(root: Path) -> None:
    first = FileSink(root)
    first.write(lines("s1", 0, 1))

    other = FileSink(root)  # the session moved to another worker, which wrote more
    other.write(lines("s1", 2, 3))

    first.recover(lambda session: True)  # partitions reassigned back to the first worker
    result = first.write(lines("s1", 2, 3, 4))

    assert result.appended == 1
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2, 3, 4)
    assert recorded(root, "s1") == {
        "size": len(expected("s1", 0, 1, 2, 3, 4)),
        "entries": 5,
        "offsets": {SOURCE: 4},
        "last_ts_us": TS0 + 4,
    }


def test_forget_then_position_reads_the_other_workers_position(root: Path) -> None:
    first = FileSink(root)
    first.write(lines("s1", 0))
    other = FileSink(root)
    other.write(lines("s1", 1, 2))

    first.recover(lambda session: True)

    assert first.position("s1") == other.position("s1")
    assert first.position("s1").entries == 3


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
    sink = FileSink(root)
    sink.write(lines("s1", 0, 1))
    path = data_file(root, "s1")
    position = position_file(root, "s1").read_bytes()
    content = _break_jsonl(path)

    with pytest.raises(OSError):
        sink.write(lines("s1", 2, 3))
    assert position_file(root, "s1").read_bytes() == position

    _repair(path, content)
    result = sink.write(lines("s1", 2, 3))

    assert result.appended == 2
    assert path.read_bytes() == expected("s1", 0, 1, 2, 3)
    assert recorded(root, "s1")["entries"] == 4


def test_a_batch_failing_in_its_second_session_is_retried_without_doubles(root: Path) -> None:
    sink = FileSink(root)
    sink.write([*lines("s1", 0), *lines("s2", 1)])
    path = data_file(root, "s2")
    content = _break_jsonl(path)
    batch = [*lines("s1", 2), *lines("s2", 3), *lines("s1", 4)]

    with pytest.raises(OSError):
        sink.write(batch)

    _repair(path, content)
    result = sink.write(batch)

    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 2, 4)
    assert path.read_bytes() == expected("s2", 1, 3)
    assert result.appended == 1  # s1's lines were recorded by the failed attempt
    assert recorded(root, "s1")["entries"] == 3
    assert recorded(root, "s2")["entries"] == 2


def _block_position_save(root: Path, session_id: str) -> Path:
    """Fail the first record of a position: its file cannot be created."""
    blocker = root / session_id / (POSITION_NAME + ".tmp")
    blocker.mkdir()
    (blocker / "blocker").write_bytes(b"")
    return blocker


def _fail_slot_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail mid-write: lines appended and synced, but the position cannot be recorded."""

    def fail(fd: int, slot: bytes, at: int) -> None:
        raise OSError(errno.EIO, "Input/output error (injected)")

    monkeypatch.setattr(sink_module, "_write_slot", fail)


def test_a_write_failing_after_the_append_is_repaired_by_the_same_sink(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = FileSink(root)
    sink.write(lines("s1", 0, 1))
    position = position_file(root, "s1").read_bytes()
    _fail_slot_writes(monkeypatch)

    with pytest.raises(OSError, match="injected"):
        sink.write(lines("s1", 2, 3))
    assert position_file(root, "s1").read_bytes() == position  # not recorded
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2, 3)  # but appended

    monkeypatch.undo()
    result = sink.write(lines("s1", 2, 3))

    assert result.appended == 2
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2, 3)
    assert recorded(root, "s1")["size"] == len(expected("s1", 0, 1, 2, 3))
    assert recorded(root, "s1")["entries"] == 4
    assert sorted(p.name for p in (root / "s1").iterdir()) == sorted(
        [FILE_NAME, POSITION_NAME, LOCK_NAME]
    )


def test_a_write_failing_after_the_append_is_repaired_after_a_restart(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FileSink(root).write(lines("s1", 0, 1))
    _fail_slot_writes(monkeypatch)
    with pytest.raises(OSError, match="injected"):
        FileSink(root).write(lines("s1", 2, 3))
    monkeypatch.undo()

    restarted = FileSink(root)
    assert restarted.position("s1").entries == 2
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1)

    assert restarted.write(lines("s1", 2, 3)).appended == 2
    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1, 2, 3)


def test_a_first_write_failing_after_the_append_is_repaired_after_a_restart(root: Path) -> None:
    # A brand-new session: the crash leaves the JSONL file but no position file at all.
    (root / "s1").mkdir(parents=True)
    blocker = _block_position_save(root, "s1")
    with pytest.raises(IsADirectoryError):
        FileSink(root).write(lines("s1", 0, 1))
    shutil.rmtree(blocker)

    restarted = FileSink(root)
    restarted.write(lines("s1", 0, 1))  # the replay after the restart

    assert data_file(root, "s1").read_bytes() == expected("s1", 0, 1)
    assert recorded(root, "s1")["entries"] == 2
    assert recorded(root, "s1")["offsets"] == {SOURCE: 1}


# -- check_root ------------------------------------------------------------------------------


def test_check_root_creates_a_missing_root_and_leaves_nothing_behind(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "state"
    FileSink(root).check_root()
    assert root.is_dir()
    assert list(root.iterdir()) == []


def test_check_root_accepts_an_existing_root_with_sessions(root: Path) -> None:
    FileSink(root).write(lines("s1", 0))
    FileSink(root).check_root()
    assert sorted(p.name for p in root.iterdir()) == ["s1"]
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
    FileSink(root).write(lines(".write-probe", 0))

    FileSink(root).check_root()

    assert data_file(root, ".write-probe").read_bytes() == expected(".write-probe", 0)


def test_two_writers_of_the_same_sessions_in_opposite_orders_never_deadlock(root: Path) -> None:
    # Two sinks on one root stand for a worker that has not yet noticed it lost a partition
    # and its successor: their directory locks must be taken in one order.
    sessions = [f"s{i:02d}" for i in range(12)]
    done: list[str] = []

    def writer(name: str, order: list[str]) -> None:
        sink = FileSink(root)
        for offset in range(40):
            sink.write([line(s, offset, source=f"{name}:0") for s in order])
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
        content = data_file(root, session).read_bytes()
        assert content.count(b"\n") == 80
        assert FileSink(root).position(session).entries == 80
