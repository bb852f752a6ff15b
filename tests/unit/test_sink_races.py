"""Races and rewrites of the position logs between workers on one state root (issue 18), each
shown first on the code before its fix (the scripts in ../shared/repro/ made into tests):

- a log is known by an identity of its own, not by its inode number (reused at once);
- a rewrite checks, under the log's lock, that it rewrites the file now at the path;
- only a torn tail is ever cut: an intact frame this version cannot read, or a damaged frame
  with intact frames after it, stops the worker naming the log and the offset.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest

from streams.core.records import SinkLine
from streams.errors import SinkError
from streams.runtime.stages import SinkStage
from streams.runtime.stats import Stats
from streams.sink.fence import FencedError
from streams.sink.fileio import FileStat, OsFiles, StrPath
from streams.sink.files import FILE_NAME, FileSink
from streams.sink.frames import encode_frame, parse_frames
from streams.sink.position import SinkPosition
from streams.sink.positionlog import LOG_DIR, read_recorded

P0 = "escalations:0"
#: How long another process holds a session's lock in the event-loop test (issue 18: 10 s).
HOLD_S = 10.0


def line(session: str, offset: int, source: str = "bus-events:0") -> SinkLine:
    body = f'{{"s":"{session}","o":{offset:03d}}}\n'.encode()
    return SinkLine(session, body, source, offset, 1000 + offset)


def offsets_in(root: Path, session: str) -> list[int]:
    return [int(raw[-4:-1]) for raw in (root / session / FILE_NAME).read_bytes().splitlines()]


class ReusedInodes(OsFiles):
    """The OS file layer, but every position log reports one inode number, whatever its file:
    what ext4 does when a rewrite's temporary file gets the number of the file it replaces."""

    @staticmethod
    def _same(path: str, st: FileStat | None) -> FileStat | None:
        if st is not None and f"/{LOG_DIR}/" in path and path.endswith(".log"):
            return FileStat((0, 4242), st.size, st.is_dir)
        return st

    def __init__(self) -> None:
        self.paths: dict[int, str] = {}

    def open(self, path: StrPath, *, create: bool = False, readonly: bool = False) -> int:
        fd = super().open(path, create=create, readonly=readonly)
        self.paths[fd] = str(path)
        return fd

    def close(self, fd: int) -> None:
        self.paths.pop(fd, None)
        super().close(fd)

    def fstat(self, fd: int) -> FileStat:
        found = self._same(self.paths.get(fd, ""), super().fstat(fd))
        assert found is not None
        return found

    def stat(self, path: StrPath) -> FileStat | None:
        return self._same(str(path), super().stat(path))


def test_a_log_rewritten_twice_is_never_taken_for_the_file_read_before(tmp_path: Path) -> None:
    root = tmp_path / "state"
    files = ReusedInodes()
    writer = FileSink(root, files=files, log_of=lambda s: P0)
    writer.recover(lambda s: True)
    writer.logs.compact_bytes = 600
    offset = 0

    def step() -> None:
        nonlocal offset
        writer.write([line("a", offset)])
        writer.checkpoint()
        offset += 1

    while writer.logs.compactions < 1:
        step()
    log = root / LOG_DIR / "escalations-0.log"
    while log.stat().st_size + 120 < 600:  # just below its next rewrite
        step()
    reader = FileSink(root, files=files, log_of=lambda s: P0)
    reader.recover(lambda s: False)  # reads the log (a rebalance that gave it nothing of P0)
    rewrites = writer.logs.compactions
    while writer.logs.compactions < rewrites + 2:
        step()
    writer.logs.compact_bytes = 10**9
    step()
    step()
    last = offset - 1

    # The partition moves to the reader, which replays from the writer's commit (last + 1).
    reader.recover(lambda s: True)
    assert reader.states["a"].recorded.offsets == {"bus-events:0": last}
    reader.write([line("a", last + 1)])
    reader.caught_up()
    reader.checkpoint()
    raw = (root / LOG_DIR / "escalations-0.log").read_bytes()
    assert parse_frames(raw)[1] == len(raw)  # no frame past the end, no hole of zeros
    assert read_recorded(root, "a") == reader.states["a"].recorded
    assert offsets_in(root, "a") == list(range(last + 2))


def test_a_rewrite_from_a_stale_descriptor_never_replaces_the_current_log(tmp_path: Path) -> None:
    root = tmp_path / "state"
    log_of = {"a": P0, "c": P0, "x": "escalations:1"}.__getitem__
    a_worker = FileSink(root, log_of=log_of)
    a_worker.recover(lambda s: True)
    a_worker.write([line("a", 0)])
    a_worker.checkpoint()  # A holds a descriptor of P0's log

    b_worker = FileSink(root, log_of=log_of)
    b_worker.logs.compact_bytes = 1
    b_worker.recover(lambda s: s != "x")  # B takes P0
    for o in range(1, 6):
        b_worker.write([line("a", o)])
        b_worker.checkpoint()  # B rewrites the log
    b_worker.logs.compact_bytes = 10**9
    b_worker.write([line("c", 100)])
    b_worker.checkpoint()  # "c" is recorded only in B's rewritten log

    a_worker.logs.compact_bytes = 1
    a_worker.recover(lambda s: s == "x")
    for o in range(6, 30):
        b_worker.write([line("a", o)])
        b_worker.checkpoint()
    a_worker.recover(lambda s: s == "x")
    for o in range(30, 40):
        b_worker.write([line("a", o)])
        b_worker.checkpoint()  # B commits up to 39
    a_worker.write([line("x", 0, "bus-events:1")])
    a_worker.checkpoint()  # A's checkpoint rewrites P0's log, its descriptor stale

    assert read_recorded(root, "a").offsets == {"bus-events:0": 39}  # type: ignore[union-attr]
    assert read_recorded(root, "c") is not None
    # B is gone; C takes P0 and replays from B's commit.
    c_worker = FileSink(root, log_of=log_of)
    c_worker.recover(lambda s: s != "x")
    c_worker.write([line("a", 40)])
    c_worker.caught_up()
    c_worker.checkpoint()
    assert offsets_in(root, "a") == list(range(41))


def _frame(body: bytes) -> bytes:
    return struct.pack(">4sII", b"ESL1", len(body), zlib.crc32(body)) + body


@pytest.mark.parametrize(
    "bad",
    [
        # an entry with an eighth field (a newer version's frame during a rolling upgrade)
        _frame(json.dumps([["b", 0, 20, 1, 1000, 1, {"bus-events:0": 7}, {"new": 1}]]).encode()),
        # a frame damaged in the middle of the log (its checksum fails), intact frames after it
        _frame(b'[["b",0,20,1,1000,1,{}]]')[:-3] + b"XYZ",
    ],
    ids=["unreadable", "damaged"],
)
def test_only_a_torn_tail_is_cut(tmp_path: Path, bad: bytes) -> None:
    root = tmp_path / "state"
    sink = FileSink(root, log_of=lambda s: P0)
    sink.recover(lambda s: True)
    sink.write([line("a", 0)])
    sink.checkpoint()
    log = root / LOG_DIR / "escalations-0.log"
    at = log.stat().st_size
    after = encode_frame([("c", SinkPosition(10, 1, {"bus-events:0": 9}, 1009, 1))])
    with open(log, "ab") as f:
        f.write(bad + after)
    size = log.stat().st_size

    sink.write([line("a", 1)])
    with pytest.raises(SinkError, match=rf"escalations-0\.log: the frame at byte {at} "):
        sink.checkpoint()
    assert log.stat().st_size == size  # nothing cut
    with pytest.raises(SinkError, match="stopping rather than cutting it"):
        read_recorded(root, "c")


def test_a_checkpoint_that_outlived_a_revoke_never_commits(tmp_path: Path) -> None:
    # The revoke's wait for the checkpoint timed out; the partitions came back and were
    # recovered; the old round then finishes. Had it returned, the source would commit what it
    # covered, with no position recording those lines.
    root = tmp_path / "state"
    sink = FileSink(root, log_of=lambda s: P0)
    sink.recover(lambda s: True)
    sink.write([line("a", o) for o in range(5)])
    sink.checkpoint()
    committed = 5
    sink.write([line("a", o) for o in range(5, 10)])
    checkpoints = sink.checkpoints
    rnd = checkpoints.begin()
    assert rnd is not None
    checkpoints.sync(rnd, data=True)
    sink.recover(lambda s: True)  # the revoke gave up waiting; assigned again
    checkpoints.record(rnd)
    checkpoints.sync(rnd, data=False)
    with pytest.raises(SinkError, match="outlived the revoke: stopping without committing"):
        checkpoints.finish(rnd)
    # (had finish returned, the source would have committed 10 here)
    # The worker stopped; the next owner replays from what was committed.
    after = FileSink(root, log_of=lambda s: P0)
    after.recover(lambda s: True)
    after.write([line("a", o) for o in range(committed, 11)])
    after.caught_up()
    after.checkpoint()
    assert offsets_in(root, "a") == list(range(11))


async def test_a_lock_held_by_another_process_never_stalls_the_event_loop(tmp_path: Path) -> None:
    # `sink rebuild` (here: another open file description) holds a session's lock while a
    # batch and a checkpoint run: the loop keeps ticking; the write lands once it is free.
    root = tmp_path / "state"
    sink = FileSink(root, log_of=lambda s: P0)
    sink.recover(lambda s: True)
    sink.write([line("a", 0), line("b", 0)])
    stage = SinkStage(decoder=None, sink=sink, dead_letter=None, stats=Stats.empty())  # type: ignore[arg-type]
    held = HOLD_S
    fd = os.open(root / "b" / FILE_NAME, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    timer = threading.Timer(held, lambda: fcntl.flock(fd, fcntl.LOCK_UN))
    timer.start()
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while time.monotonic() < started + held + 0.5:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    started = time.monotonic()
    try:
        ticks = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        write = asyncio.create_task(stage._write([line("b", 1), line("a", 1)]))
        await asyncio.sleep(0.05)
        await stage.checkpoint()  # as the source's checkpoint task does, meanwhile
        assert await write == 2
        await ticks
    finally:
        timer.cancel()
        os.close(fd)
    assert time.monotonic() - started >= held
    print(f"lock held {held:.0f} s: longest event-loop stall {1000 * max(gaps):.1f} ms")
    assert max(gaps) < 0.1, f"longest event-loop stall {max(gaps):.3f} s"
    assert offsets_in(root, "b") == [0, 1]
    assert offsets_in(root, "a") == [0, 1]


def test_a_worker_that_lost_its_partition_never_writes_it_again(tmp_path: Path) -> None:
    # A zombie: paused until the group gave its partition to another worker, then resumed
    # with its states and a batch in hand (here: two sinks of one process on one root).
    root = tmp_path / "state"
    log = root / LOG_DIR / "escalations-0.log"
    zombie = FileSink(root, log_of=lambda s: P0)
    zombie.recover(lambda s: True, [P0])
    zombie.write([line("a", 0)])
    zombie.checkpoint()
    zombie.write([line("a", 1)])  # written, not checkpointed: the next owner replays it

    owner = FileSink(root, log_of=lambda s: P0)
    owner.recover(lambda s: True, [P0])
    data, logged = (root / "a" / FILE_NAME).read_bytes(), log.read_bytes()

    with pytest.raises(FencedError, match="escalations:0 was assigned to another worker"):
        zombie.write([line("a", 2)])
    with pytest.raises(FencedError):
        zombie.checkpoint()  # its position of a1 is not appended to the new owner's log
    assert (root / "a" / FILE_NAME).read_bytes() == data
    assert log.read_bytes() == logged

    owner.write([line("a", o) for o in range(1, 3)])
    owner.caught_up()
    owner.checkpoint()
    assert offsets_in(root, "a") == [0, 1, 2]
    # A partition assigned back is written again.
    zombie.recover(lambda s: True, [P0])
    zombie.write([line("a", 3)])
    assert offsets_in(root, "a") == [0, 1, 2, 3]


class ReusedDataInodes(ReusedInodes):
    """Every data file reports one inode number: two ``sink rebuild``s while the worker's
    descriptor is out of its cache, the second given the inode the first one freed."""

    @staticmethod
    def _same(path: str, st: FileStat | None) -> FileStat | None:
        if st is not None and path.endswith(f"/{FILE_NAME}"):
            return FileStat((0, 4343), st.size, st.is_dir)
        return st


def test_a_data_file_replaced_under_a_reused_inode_is_reloaded(tmp_path: Path) -> None:
    from streams.sink.replace import replace_session

    root = tmp_path / "state"
    worker = FileSink(root, files=ReusedDataInodes(), log_of=lambda s: P0)
    worker.recover(lambda s: True)
    worker.write([line("a", 0), line("a", 1)])
    worker.checkpoint()
    worker.release_idle(idle_s=0)  # the descriptor leaves the cache
    assert not len(worker.fds)
    rebuild = FileSink(root, log_of=lambda s: P0)  # `escalations sink rebuild`
    assert replace_session(rebuild, "a", [line("a", 0), line("a", 1)]) is not None
    worker.write([line("a", 2)])
    worker.checkpoint()  # the source commits offset 2

    # A crash; the next owner replays from offset 3: nothing.
    after = FileSink(root, log_of=lambda s: P0)
    after.recover(lambda s: True)
    after.caught_up()
    assert offsets_in(root, "a") == [0, 1, 2]
