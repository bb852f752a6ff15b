"""streams.sink after a crash and under outside changes: files never shrink after a process
crash, damage is reported, descriptors stay bounded, rebuild and verify work beside a worker.

Real files under ``tmp_path``; a "crash" abandons a ``FileSink`` (nothing of it is used again)
and a "restart" is a new one that recovers. ``Spy`` counts what the sink does to the files.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from streams.core.jsonl import render
from streams.core.mapping import EscalationEntry
from streams.core.records import SinkLine
from streams.sink.fileio import OsFiles, StrPath
from streams.sink.files import FILE_NAME, LOCK_NAME, FileSink, LockBusy
from streams.sink.position import SinkPosition
from streams.sink.positionlog import read_recorded
from streams.sink.replace import replace_locked, replace_session
from streams.sink.verify import inspect_session, verify_session
from tests.unit.test_sink import SOURCE, expected, line, lines, text


class Spy(OsFiles):
    """The OS file layer, counting open descriptors and recording every truncation."""

    def __init__(self) -> None:
        self.open_now = 0
        self.open_peak = 0
        self.truncations: list[tuple[int, int]] = []  # (size before, after)

    def open(self, path: StrPath, *, create: bool = False, readonly: bool = False) -> int:
        fd = super().open(path, create=create, readonly=readonly)
        self._opened()
        return fd

    def open_dir(self, path: StrPath) -> int:
        fd = super().open_dir(path)
        self._opened()
        return fd

    def _opened(self) -> None:
        self.open_now += 1
        self.open_peak = max(self.open_peak, self.open_now)

    def close(self, fd: int) -> None:
        super().close(fd)
        self.open_now -= 1

    def truncate(self, fd: int, size: int) -> None:
        self.truncations.append((self.fstat(fd).size, size))
        super().truncate(fd, size)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "state"


def data(root: Path, session_id: str = "s1") -> Path:
    return root / session_id / FILE_NAME


def recorded(root: Path, session_id: str = "s1") -> SinkPosition:
    position = read_recorded(root, session_id)
    assert position is not None
    return position


def entry(session_id: str, offset: int) -> SinkLine:
    """A real entry's line (what ``sink verify`` checks), distinct per session and offset."""
    ts = 1_795_556_444_000_000 + offset
    rendered = render(
        EscalationEntry(ts, "failed", "g1", None, f"{session_id} {offset}", None, False)
    )
    return SinkLine(session_id, rendered, SOURCE, offset, ts)


def entries(session_id: str, *offsets: int) -> list[SinkLine]:
    return [entry(session_id, o) for o in offsets]


def durable(sink: FileSink, items: Iterable[SinkLine]) -> None:
    sink.write(items)
    sink.checkpoint()


def restarted(root: Path, files: OsFiles | None = None, max_open_files: int = 1024) -> FileSink:
    sink = FileSink(root, files=files or OsFiles(), max_open_files=max_open_files)
    sink.recover(lambda session_id: True)
    return sink


# -- after a process crash the files never shrink ----------------------------------------------


def test_whole_lines_written_after_the_last_checkpoint_are_written_over_not_cut(
    root: Path,
) -> None:
    durable(FileSink(root), lines("s1", 0, 1))
    FileSink(root).write(lines("s1", 2, 3))  # then SIGKILL: written, never checkpointed
    inode = data(root).stat().st_ino
    spy = Spy()

    sink = restarted(root, spy)
    assert data(root).read_bytes() == expected("s1", 0, 1, 2, 3)  # kept on recovery
    durable(sink, lines("s1", 2, 3, 4))  # the replay from the committed offset
    sink.caught_up()

    assert data(root).read_bytes() == expected("s1", 0, 1, 2, 3, 4)
    assert spy.truncations == []
    assert data(root).stat().st_ino == inode
    assert recorded(root).entries == 5


def test_a_torn_last_line_is_completed_not_cut(root: Path) -> None:
    durable(FileSink(root), lines("s1", 0, 1))
    torn = text("s1", 2)[:17]
    with open(data(root), "ab") as f:  # SIGKILL in the middle of a write
        f.write(torn)
    spy = Spy()

    sink = restarted(root, spy)
    assert data(root).read_bytes().endswith(torn)
    durable(sink, lines("s1", 2, 3))

    assert data(root).read_bytes() == expected("s1", 0, 1, 2, 3)
    assert spy.truncations == []


def test_junk_past_the_position_is_cut_once_the_replay_has_caught_up(root: Path) -> None:
    durable(FileSink(root), entries("s1", 0, 1))
    good = data(root).read_bytes()
    with open(data(root), "ab") as f:  # bytes no replay will write: not the sink's
        f.write(b'{"ts":"2026-11-24T21:40:44Z","kind":"fail')

    sink = restarted(root)
    (problem,) = verify_session(sink, "s1")  # reported until the worker repairs it
    assert "torn tail of 41 bytes" in problem
    assert sink.caught_up() == len(b'{"ts":"2026-11-24T21:40:44Z","kind":"fail')

    assert data(root).read_bytes() == good
    assert verify_session(sink, "s1") == []
    assert sink.caught_up() == 0  # once per assignment


def test_a_tail_that_differs_is_cut_at_the_first_byte_that_differs(root: Path) -> None:
    durable(FileSink(root), lines("s1", 0, 1))
    size = data(root).stat().st_size
    common = text("s1", 2)[:20]
    with open(data(root), "ab") as f:
        f.write(common + b"junk, not what the replay writes\n")
    spy = Spy()

    durable(restarted(root, spy), lines("s1", 2))

    assert data(root).read_bytes() == expected("s1", 0, 1, 2)
    assert [after for _, after in spy.truncations] == [size + len(common)]


def test_a_complete_but_unrecorded_line_is_kept_and_written_once(root: Path) -> None:
    durable(FileSink(root), lines("s1", 0, 1))
    with open(data(root), "ab") as f:
        f.write(text("s1", 2))  # appended, but never checkpointed

    sink = restarted(root)
    assert sink.known_positions()["s1"].entries == 2
    assert inspect_session(sink, "s1").pending_lines == 1

    assert sink.write(lines("s1", 2)).appended == 1  # the replay writes it over, once
    assert data(root).read_bytes() == expected("s1", 0, 1, 2)


def test_recover_touches_only_the_sessions_it_owns(root: Path) -> None:
    durable(FileSink(root), [*lines("s1", 0), *lines("s2", 0)])
    for session in ("s1", "s2"):
        with open(data(root, session), "ab") as f:
            f.write(b"junk")

    sink = FileSink(root)
    assert sink.recover(owns=lambda session_id: session_id == "s1") == 1
    sink.caught_up()

    assert data(root, "s1").read_bytes() == expected("s1", 0)
    assert data(root, "s2").read_bytes() == expected("s2", 0) + b"junk"  # not ours: left alone


def test_recover_asks_owns_only_about_safe_directory_names(root: Path) -> None:
    durable(FileSink(root), lines("s1", 0))
    (root / "s2").mkdir()
    (root / "not-a-directory.txt").write_bytes(b"ignored")
    asked: list[str] = []

    def owns(session_id: str) -> bool:
        asked.append(session_id)
        return False

    assert FileSink(root).recover(owns) == 0
    assert sorted(asked) == ["s1", "s2"]
    assert (root / "not-a-directory.txt").read_bytes() == b"ignored"


def test_recover_of_a_missing_root_checks_nothing(root: Path) -> None:
    assert FileSink(root).recover(owns=lambda session_id: True) == 0


# -- files without a position ----------------------------------------------------------------


def test_a_file_without_a_position_that_starts_as_the_replay_is_the_sinks(root: Path) -> None:
    # A power loss before the session's first checkpoint: its data file made it to the disk,
    # its position file did not. The replay writes the same lines over it: nothing doubled.
    (root / "s1").mkdir(parents=True)
    data(root).write_bytes(expected("s1", 0, 1) + text("s1", 2)[:9])

    sink = restarted(root)
    durable(sink, lines("s1", 0, 1, 2, 3))

    assert data(root).read_bytes() == expected("s1", 0, 1, 2, 3)
    assert recorded(root).entries == 4


def test_jsonl_without_a_position_file_is_adopted(root: Path) -> None:
    content = b'{"a":1}\n{"a":2}\n{"a":3}\n'
    (root / "s1").mkdir(parents=True)
    data(root).write_bytes(content)

    sink = restarted(root)
    sink.caught_up()
    assert data(root).read_bytes() == content  # never cut for being unexplained

    durable(sink, lines("s1", 0))
    assert data(root).read_bytes() == content + expected("s1", 0)
    assert recorded(root).entries == 4
    assert recorded(root).offsets == {SOURCE: 0}


# -- a reader may empty, cut, replace or remove its file (issue 20) ---------------------------


def test_a_file_a_reader_emptied_gets_the_next_lines_and_never_the_old_ones(root: Path) -> None:
    sink = FileSink(root)
    durable(sink, lines("s1", 0, 1))
    data(root).write_bytes(b"")  # the reader took the pending escalations

    result = sink.write(lines("s1", 0, 1, 2) + lines("s2", 0))  # a replay's repeats, then new

    assert result.corrupt == {} and sink.corrupt_sessions() == {}
    assert data(root).read_bytes() == expected("s1", 2)
    assert sink.sessions_io.discontinuities == {"emptied": 1}
    sink.checkpoint()
    again = restarted(root)  # the new start is durable: nothing to compare, nothing cut
    durable(again, lines("s1", 1, 2, 3))
    assert data(root).read_bytes() == expected("s1", 2, 3)
    assert again.sessions_io.discontinuities == {}


def test_a_file_cut_mid_line_keeps_its_whole_lines_then_the_next(root: Path) -> None:
    durable(FileSink(root), lines("s1", 0, 1))
    path = data(root)
    path.write_bytes(path.read_bytes()[:-5])  # cut while the worker was down

    sink = restarted(root)
    assert sink.corrupt_sessions() == {}
    durable(sink, lines("s1", 1, 2))
    assert path.read_bytes() == expected("s1", 0, 2)  # the torn line's fragment is gone
    assert sink.sessions_io.discontinuities == {"truncated": 1}


def test_a_file_a_reader_replaced_is_the_base_of_the_next_lines(root: Path) -> None:
    sink = FileSink(root)
    durable(sink, lines("s1", 0, 1))
    tmp = root / "s1" / "reader.tmp"
    tmp.write_bytes(b'{"kept by the reader": true}\n')
    os.replace(tmp, data(root))

    durable(sink, lines("s1", 1, 2))

    assert data(root).read_bytes() == b'{"kept by the reader": true}\n' + expected("s1", 2)
    assert sink.sessions_io.discontinuities == {"replaced": 1}
    assert restarted(root).known_positions()["s1"].entries == 2


def test_a_file_a_reader_removed_is_created_for_the_next_lines(root: Path) -> None:
    sink = FileSink(root)
    durable(sink, lines("s1", 0))
    data(root).unlink()
    durable(sink, lines("s1", 1))
    assert data(root).read_bytes() == expected("s1", 1)

    durable(FileSink(root), lines("s1", 2))  # another sink, later: removed while it was down
    data(root).unlink()
    durable(restarted(root), lines("s1", 3))
    assert data(root).read_bytes() == expected("s1", 3)


def test_a_directory_removed_under_a_worker_starts_anew_with_the_next_lines(root: Path) -> None:
    sink = FileSink(root)
    durable(sink, lines("s1", 0, 1))
    shutil.rmtree(root / "s1")

    result = sink.write(lines("s1", 2) + lines("s2", 0))

    assert result.corrupt == {}
    assert data(root).read_bytes() == expected("s1", 2)
    assert sink.sessions_io.discontinuities == {"removed": 1}
    sink.checkpoint()
    durable(restarted(root), lines("s1", 0, 1, 2, 3))  # a replay: the old lines never return
    assert data(root).read_bytes() == expected("s1", 2, 3)


def test_a_directory_removed_while_no_worker_ran_is_forgotten_not_resurrected(root: Path) -> None:
    durable(FileSink(root), lines("s1", 0, 1) + lines("s2", 0))
    shutil.rmtree(root / "s1")  # the session ended; its directory archived

    sink = restarted(root)
    sink.caught_up()
    sink.checkpoint()
    assert not (root / "s1").exists()
    assert "s1" not in sink.known_positions()


def test_rebuild_restores_every_line_of_a_file_a_reader_emptied(root: Path) -> None:
    worker = FileSink(root)
    durable(worker, lines("s1", 0, 1, 2))
    data(root).write_bytes(b"")
    durable(worker, lines("s1", 3))

    assert replace_session(FileSink(root), "s1", lines("s1", 0, 1, 2, 3)) is not None
    durable(worker, lines("s1", 3, 4))

    assert data(root).read_bytes() == expected("s1", 0, 1, 2, 3, 4)
    assert recorded(root).entries == 5


# -- rebuild beside a running worker ------------------------------------------------------------


def test_rebuild_refuses_a_file_with_lines_it_has_not_read_yet(root: Path) -> None:
    worker = FileSink(root)
    durable(worker, lines("s1", 0, 1))
    worker.write(lines("s1", 2))  # written, not yet checkpointed

    assert replace_session(FileSink(root), "s1", lines("s1", 0, 1)) is None  # read more, then retry
    assert data(root).read_bytes() == expected("s1", 0, 1, 2)

    rebuilt = replace_session(FileSink(root), "s1", lines("s1", 0, 1, 2))
    assert rebuilt is not None and rebuilt.entries == 3

    durable(worker, lines("s1", 2, 3))  # the worker notices the new file and goes on
    assert data(root).read_bytes() == expected("s1", 0, 1, 2, 3)
    assert recorded(root).entries == 4
    assert worker.corrupt_sessions() == {}


def test_open_descriptors_stay_under_the_bound_whatever_the_number_of_sessions(
    root: Path,
) -> None:
    spy = Spy()
    sink = FileSink(root, files=spy, max_open_files=16)
    for offset in range(3):
        sink.write([line(f"s{n:03d}", offset) for n in range(300)])
        sink.checkpoint()
    # The LRU, the state root's (for syncfs), the output partition's position log, and a
    # directory being synced.
    assert spy.open_peak <= 16 + 3
    assert sink.fds.peak <= 16
    sink.close()
    assert spy.open_now == 0

    sink = restarted(root, spy, max_open_files=16)
    sink.write([line(f"s{n:03d}", 3) for n in range(300)])
    sink.checkpoint()
    assert spy.open_peak <= 16 + 3
    for n in range(300):
        assert data(root, f"s{n:03d}").read_bytes() == expected(f"s{n:03d}", 0, 1, 2, 3)


def test_cached_descriptors_save_the_opens(root: Path) -> None:
    spy = Spy()
    sink = FileSink(root, files=spy)
    sink.write([line(f"s{n}", 0) for n in range(10)])
    opened = sink.fds.opened
    for offset in range(1, 20):
        sink.write([line(f"s{n}", offset) for n in range(10)])
    assert sink.fds.opened == opened  # lock and data files stay open


def test_a_checkpoint_is_due_once_enough_bytes_were_written(root: Path) -> None:
    sink = FileSink(root)
    sink.checkpoint_bytes = 2 * len(text("s1", 0))
    sink.write(lines("s1", 0))
    assert not sink.checkpoint_due()
    sink.write(lines("s1", 1, 2))
    assert sink.checkpoint_due()
    sink.checkpoint()
    assert not sink.checkpoint_due()


# -- verify beside a running worker -------------------------------------------------------------


def test_verify_reports_lines_not_yet_checkpointed_as_pending_not_as_problems(
    root: Path,
) -> None:
    worker = FileSink(root)
    durable(worker, entries("s1", 0, 1))
    worker.write(entries("s1", 2, 3))

    report = inspect_session(FileSink(root), "s1")

    assert report.problems == []
    pending = entry("s1", 2).line + entry("s1", 3).line
    assert (report.pending_lines, report.pending_bytes) == (2, len(pending))
    worker.checkpoint()
    assert inspect_session(FileSink(root), "s1").pending_lines == 0


def test_verify_reads_under_the_directory_lock(root: Path) -> None:
    durable(FileSink(root), entries("s1", 0))
    fd = os.open(root / "s1" / FILE_NAME, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a writer in the middle of a write
    with open(data(root), "ab") as f:
        f.write(entry("s1", 1).line[:10])
    reports: list[list[str]] = []
    reader = threading.Thread(target=lambda: reports.append(verify_session(FileSink(root), "s1")))
    reader.start()
    time.sleep(0.2)
    assert reports == []  # waiting for the writer
    with open(data(root), "ab") as f:
        f.write(entry("s1", 1).line[10:])
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    reader.join(timeout=10)
    assert reports == [[]]  # the whole line: pending, not torn


def test_verify_gives_up_on_a_lock_held_too_long(root: Path) -> None:
    durable(FileSink(root), lines("s1", 0))
    fd = os.open(root / "s1" / FILE_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        report = inspect_session(FileSink(root), "s1", lock_wait_s=0.1)
    finally:
        os.close(fd)
    assert report.problems and "lock was held" in report.problems[0]


def _assert_a_rebuild_waits_for(root: Path, fd: int) -> None:
    """With ``fd`` locked, a rebuild of s1 waits; once it is unlocked, the rebuild is done."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    done: list[object] = []
    rebuild = threading.Thread(
        target=lambda: done.append(replace_session(FileSink(root), "s1", lines("s1", 0, 1)))
    )
    rebuild.start()
    time.sleep(0.2)
    assert done == []  # waiting
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    rebuild.join(timeout=10)
    assert done and done[0] is not None
    assert data(root).read_bytes() == expected("s1", 0, 1)


def test_a_rebuild_waits_for_the_directory_lock_a_writer_holds(root: Path) -> None:
    durable(FileSink(root), lines("s1", 0))
    _assert_a_rebuild_waits_for(root, os.open(data(root), os.O_RDWR))  # the lock: its data file


def test_a_rebuild_waits_for_a_worker_of_an_earlier_version_on_the_lock_file(root: Path) -> None:
    durable(FileSink(root), lines("s1", 0))
    assert not (root / "s1" / LOCK_NAME).exists()  # this version keeps no lock file
    legacy = os.open(root / "s1" / LOCK_NAME, os.O_RDWR | os.O_CREAT)  # an earlier worker's
    _assert_a_rebuild_waits_for(root, legacy)


def test_a_worker_reloads_a_file_replaced_while_it_waited_for_the_lock(root: Path) -> None:
    worker = FileSink(root)
    durable(worker, lines("s1", 0))
    fd = os.open(data(root), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a rebuild holds the old file ...
    writes: list[int] = []
    thread = threading.Thread(target=lambda: writes.append(worker.write(lines("s1", 2)).appended))
    thread.start()
    time.sleep(0.2)
    assert writes == []
    # ... and writes the new one (and its position) and renames it in: a rebuild's work.
    assert replace_locked(FileSink(root), root / "s1", lines("s1", 0, 1)) is not None
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    thread.join(timeout=10)
    assert writes == [1]  # written to the new file, after its bytes
    assert data(root).read_bytes() == expected("s1", 0, 1, 2)


def test_a_write_that_must_not_wait_gives_way_to_a_lock_held_elsewhere(root: Path) -> None:
    # The worker writes on its event loop: a lock held by another process (a rebuild, a stuck
    # writer) must not block it; the write is then done again where waiting is harmless.
    sink = FileSink(root)
    durable(sink, lines("s1", 0) + lines("s2", 0))
    fd = os.open(root / "s2" / FILE_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(LockBusy) as busy:
            sink.write(lines("s1", 1) + lines("s2", 1), wait=False)
        assert busy.value.appended == 1  # s1's line, before s2's lock
    finally:
        os.close(fd)
    assert sink.write(lines("s1", 1) + lines("s2", 1)).appended == 1  # s2's, s1's skipped
    assert data(root, "s1").read_bytes() == expected("s1", 0, 1)
    assert data(root, "s2").read_bytes() == expected("s2", 0, 1)


def test_verify_reports_a_new_sessions_lines_as_pending_before_its_first_checkpoint(
    root: Path,
) -> None:
    worker = FileSink(root)
    worker.write(entries("s1", 0, 1))

    report = inspect_session(FileSink(root), "s1")

    assert (report.problems, report.pending_lines) == ([], 2)
