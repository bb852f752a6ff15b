"""Power-loss and SIGKILL safety of the file sink, proved on a model of the file system.

The sink does its I/O through a ``FileLayer`` (streams/sink/fileio.py). ``ModelFiles`` below
implements it in memory and records, per file, what was written (the page cache) and what a
completed ``fdatasync``/``fsync``/``syncfs`` made durable, and per directory which entries are
durable. A scenario (batches of output records, a checkpoint every two batches, the source's
commit after each) is run once to count its steps (every write, truncate, create, rename and
sync), then again for every step with a crash just before it. The crash keeps:

- ``killed``: everything written (a SIGKILL: the page cache survives);
- ``killed_mid_write``: the same, with the interrupted ``pwrite`` half done;
- ``power``: only what was durable (files and directory entries);
- ``power_zero_tail``: durable, and each file's unsynced tail zero-filled to its size (the
  size reached the disk, the data did not);
- ``power_cut_short``: durable, then every unsynced write half done (torn lines, torn slots);
- ``power_data_first``: durable, but every data file and directory with all its bytes (the
  data reached the disk before the position logs that describe it);
- ``power_positions_first``: durable, but every other file (position logs and files, their
  temporary files) and directory with all its bytes: writeback in the worst order, the
  positions before the data they describe.

Recovery (a new sink over the crashed files) plus a replay from the last committed offset
(in other batch sizes), the end of the replay (``caught_up``) and a checkpoint must then give
byte-exact files with positions that describe them, every time; and after a SIGKILL no data
file ever gets shorter than it was.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from streams.core.records import SinkLine
from streams.sink.checkpoint import Round
from streams.sink.fileio import FileStat, StrPath
from streams.sink.files import FILE_NAME, FileSink
from streams.sink.positionlog import read_recorded

ROOT = Path("/model/state")


class Crash(Exception):
    """The simulated crash, raised just before a step runs."""

    def __init__(self, step: int, what: str, torn: tuple[int, int, bytes] | None) -> None:
        super().__init__(f"crash before step {step}: {what}")
        self.step, self.what, self.torn = step, what, torn


@dataclass
class Inode:
    number: int
    is_dir: bool = False
    data: bytearray = field(default_factory=bytearray)  # what reads see
    durable: bytes = b""  # what a power loss keeps
    #: Writes and truncates since the last sync of this file: ("w", offset, bytes) or
    #: ("t", size, b"").
    pending: list[tuple[str, int, bytes]] = field(default_factory=list)

    def sync(self) -> None:
        self.durable = bytes(self.data)
        self.pending.clear()


def _apply(content: bytearray, op: tuple[str, int, bytes], fraction: float = 1.0) -> None:
    kind, at, data = op
    if kind == "t":
        del content[at:]
        return
    data = data[: int(len(data) * fraction)]
    if at > len(content):
        content.extend(bytes(at - len(content)))
    content[at : at + len(data)] = data


class ModelFiles:
    """An in-memory file system with durability, crashing before step ``crash_at``."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.inodes: dict[int, Inode] = {}
        self.names: dict[str, int] = {}  # path -> inode, as processes see it
        self.durable_names: dict[str, int] = {}  # what a power loss keeps
        self.fds: dict[int, int] = {}
        self.next_fd = 100
        self.steps = 0
        self.crash_at = crash_at
        self.truncations: list[tuple[str, int, int]] = []  # (path, size before, after)
        self.history: list[str] = []  # each step's description
        root = self._new(is_dir=True)
        self.names["/"] = self.durable_names["/"] = root.number
        for path in ("/model", str(ROOT)):
            node = self._new(is_dir=True)
            self.names[path] = self.durable_names[path] = node.number

    # -- bookkeeping ----------------------------------------------------------------------------

    def _new(self, *, is_dir: bool = False) -> Inode:
        node = Inode(len(self.inodes) + 1, is_dir)
        self.inodes[node.number] = node
        return node

    def _step(self, what: str, torn: tuple[int, int, bytes] | None = None) -> None:
        if self.crash_at is not None and self.steps == self.crash_at:
            raise Crash(self.steps, what, torn)
        self.steps += 1
        self.history.append(what)

    def _node(self, fd: int) -> Inode:
        return self.inodes[self.fds[fd]]

    def _path_of(self, number: int) -> str:
        return next(p for p, n in self.names.items() if n == number)

    @staticmethod
    def _parent(path: str) -> str:
        return str(PurePosixPath(path).parent)

    def _fd(self, number: int) -> int:
        self.next_fd += 1
        self.fds[self.next_fd] = number
        return self.next_fd

    # -- the FileLayer --------------------------------------------------------------------------

    def open(self, path: StrPath, *, create: bool = False, readonly: bool = False) -> int:
        key = os.fspath(path)
        number = self.names.get(key)
        if number is None:
            parent = self.names.get(self._parent(key))
            if not create or parent is None or not self.inodes[parent].is_dir:
                raise FileNotFoundError(2, "No such file or directory", key)
            self._step(f"create {key}")
            number = self._new().number
            self.names[key] = number
        if self.inodes[number].is_dir:
            raise IsADirectoryError(21, "Is a directory", key)
        return self._fd(number)

    def open_dir(self, path: StrPath) -> int:
        number = self.names.get(os.fspath(path))
        if number is None or not self.inodes[number].is_dir:
            raise FileNotFoundError(2, "No such directory", os.fspath(path))
        return self._fd(number)

    def close(self, fd: int) -> None:
        del self.fds[fd]

    def dup(self, fd: int) -> int:
        return self._fd(self.fds[fd])

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return bytes(self._node(fd).data[offset : offset + size])

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        node = self._node(fd)
        payload = bytes(data)
        self._step(f"pwrite {len(payload)} bytes at {offset}", (node.number, offset, payload))
        op = ("w", offset, payload)
        _apply(node.data, op)
        node.pending.append(op)
        return len(payload)

    def truncate(self, fd: int, size: int) -> None:
        node = self._node(fd)
        self._step(f"truncate to {size}")
        self.truncations.append((self._path_of(node.number), len(node.data), size))
        op = ("t", size, b"")
        _apply(node.data, op)
        node.pending.append(op)

    def fstat(self, fd: int) -> FileStat:
        node = self._node(fd)
        return FileStat((1, node.number), len(node.data), node.is_dir)

    def stat(self, path: StrPath) -> FileStat | None:
        number = self.names.get(os.fspath(path))
        if number is None:
            return None
        node = self.inodes[number]
        return FileStat((1, number), len(node.data), node.is_dir)

    def datasync(self, fd: int) -> None:
        self._step("fdatasync")
        self._node(fd).sync()

    def fsync(self, fd: int) -> None:
        node = self._node(fd)
        self._step("fsync")
        if not node.is_dir:
            node.sync()
            return
        directory = self._path_of(node.number)
        for path in set(self.names) | set(self.durable_names):
            if self._parent(path) == directory and path != directory:
                if path in self.names:
                    self.durable_names[path] = self.names[path]
                else:
                    self.durable_names.pop(path, None)

    def syncfs(self, fd: int) -> None:
        self._step("syncfs")
        for node in self.inodes.values():
            node.sync()
        self.durable_names = dict(self.names)

    def mkdir(self, path: StrPath) -> bool:
        key = os.fspath(path)
        if key in self.names:
            if not self.inodes[self.names[key]].is_dir:
                raise FileExistsError(17, "File exists", key)
            return False
        parent = self.names.get(self._parent(key))
        if parent is None:
            raise FileNotFoundError(2, "No such file or directory", key)
        self._step(f"mkdir {key}")
        self.names[key] = self._new(is_dir=True).number
        return True

    def replace(self, source: StrPath, target: StrPath) -> None:
        self._step(f"rename {source} -> {target}")
        self.names[os.fspath(target)] = self.names.pop(os.fspath(source))

    def list_dirs(self, path: StrPath) -> list[str]:
        return self._children(path, dirs=True)

    def list_files(self, path: StrPath) -> list[str]:
        return self._children(path, dirs=False)

    def _children(self, path: StrPath, *, dirs: bool) -> list[str]:
        directory = os.fspath(path)
        if directory not in self.names:
            raise FileNotFoundError(2, "No such directory", directory)
        return [
            PurePosixPath(p).name
            for p, n in self.names.items()
            if self._parent(p) == directory and p != directory and self.inodes[n].is_dir == dirs
        ]

    def lock(self, fd: int, *, exclusive: bool = True, blocking: bool = True) -> bool:
        return True

    def unlock(self, fd: int) -> None:
        return None

    def map_shared(self, path: StrPath, size: int) -> bytearray:
        """The file's bytes themselves (what every process sees at once)."""
        return self.inodes[self.names[os.fspath(path)]].data

    # -- crashes --------------------------------------------------------------------------------

    def crashed(self, variant: str, torn: tuple[int, int, bytes] | None) -> ModelFiles:
        """What a restarted process sees after the crash ``variant``."""
        after = ModelFiles()
        after.inodes = {}
        power = variant.startswith("power")
        for number, node in self.inodes.items():
            content = bytearray(node.data if not power else node.durable)
            if variant == "killed_mid_write" and torn is not None and torn[0] == number:
                _apply(content, ("w", torn[1], torn[2]), 0.5)
            elif variant == "power_zero_tail" and len(node.data) > len(node.durable):
                content.extend(bytes(len(node.data) - len(node.durable)))
            elif variant == "power_cut_short":
                for op in node.pending:
                    _apply(content, op, 0.5)
            copy = Inode(number, node.is_dir, content, bytes(content))
            after.inodes[number] = copy
        names = dict(self.durable_names if power else self.names)
        if variant in ("power_data_first", "power_positions_first"):
            data_first = variant == "power_data_first"
            for path, number in self.names.items():
                node = self.inodes[number]
                if node.is_dir or (PurePosixPath(path).name == FILE_NAME) == data_first:
                    names[path] = number
                    if not node.is_dir:
                        content = bytearray(node.data)
                        after.inodes[number] = Inode(number, False, content, bytes(content))
        # a name whose parent directory is gone is gone too
        after.names = {p: n for p, n in names.items() if _reachable(p, names)}
        after.durable_names = dict(after.names)
        return after

    def files(self) -> dict[str, bytes]:
        """Every session's data file, by session id."""
        found = {}
        for path, number in self.names.items():
            p = PurePosixPath(path)
            if p.name == FILE_NAME and str(p.parent.parent) == str(ROOT):
                found[p.parent.name] = bytes(self.inodes[number].data)
        return found


def _reachable(path: str, names: dict[str, int]) -> bool:
    p = PurePosixPath(path)
    return all(str(parent) in names for parent in p.parents)


# -- the scenario ---------------------------------------------------------------------------------


def _line(session: str, source: str, offset: int, width: int) -> SinkLine:
    body = json.dumps({"session": session, "source": source, "offset": offset, "pad": "x" * width})
    return SinkLine(session, body.encode() + b"\n", source, offset, 1_000 + offset)


def _records() -> list[SinkLine]:
    """The output topic: two source partitions, three sessions (one appearing late), repeats
    (the map stage produced an entry again after a crash) and lines of several lengths."""
    a, b = "bus-events:0", "bus-events:1"
    return [
        _line("s1", a, 0, 3),
        _line("s2", a, 1, 40),
        _line("s1", b, 0, 7),
        _line("s1", a, 2, 1),
        _line("s2", b, 1, 90),
        _line("s1", a, 0, 3),  # a repeat
        _line("s3", a, 3, 12),  # a session that appears later
        _line("s2", a, 4, 5),
        _line("s3", b, 2, 60),
        _line("s1", b, 3, 25),
        _line("s2", a, 1, 40),  # a repeat
        _line("s3", a, 5, 2),
        _line("s1", a, 6, 33),
        _line("s4", b, 4, 8),  # another late session
        _line("s2", b, 5, 0),
        _line("s4", a, 7, 44),
        _line("s3", b, 2, 60),  # a repeat
        _line("s1", b, 6, 15),
        _line("s4", b, 8, 3),
        _line("s2", a, 9, 70),
    ]


def _expected(records: list[SinkLine]) -> dict[str, bytes]:
    seen: dict[tuple[str, str], int] = {}
    out: dict[str, list[bytes]] = {}
    for r in records:
        if r.offset > seen.get((r.session_id, r.source), -1):
            seen[(r.session_id, r.source)] = r.offset
            out.setdefault(r.session_id, []).append(r.line)
    return {s: b"".join(lines) for s, lines in out.items()}


RECORDS = _records()
EXPECTED = _expected(RECORDS)
BATCH = 2
CHECKPOINT_EVERY = 2  # batches
REPLAY_BATCH = 3
#: Small enough that the position logs are rewritten during the scenario.
COMPACT_BYTES = 400


def _batches(records: list[SinkLine], size: int) -> Iterator[list[SinkLine]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def _sink(files: ModelFiles, sync: str, max_open_files: int = 5) -> FileSink:
    """A sink on the model, syncing files the way ``sync`` says (see SYNCS; one thread: the
    steps come in one order every time)."""
    mode, fewer_files = sync.split("-", maxsplit=1)[0], sync.endswith("-evicting")
    sink = FileSink(
        ROOT, files=files, max_open_files=3 if fewer_files else max_open_files, sync=mode
    )
    sink.logs.compact_bytes = COMPACT_BYTES
    sink.syncer.threads = 1
    return sink


def _run(
    files: ModelFiles,
    committed: list[int],
    *,
    sync: str = "syncfs",
    max_open_files: int = 5,
    overlap: bool = False,
) -> FileSink:
    """The worker: recovery, batches, a checkpoint and then a commit every two batches.

    ``committed[0]`` is the sink group's committed offset (an index into RECORDS), moved only
    after a checkpoint returned, as the source does. With ``overlap`` each checkpoint runs as
    the source runs it: the next batch is written between its data sync and its position
    records, and the commit covers only what was handled when it began.
    """
    sink = _sink(files, sync, max_open_files)
    sink.recover(lambda session: True)
    checkpoints = sink.checkpoints
    handled = committed[0]
    in_flight: tuple[Round, int] | None = None
    for n, batch in enumerate(_batches(RECORDS[committed[0] :], BATCH), 1):
        sink.write(batch)
        handled += len(batch)
        if in_flight is not None:
            rnd, covered = in_flight
            in_flight = None
            checkpoints.record(rnd)
            if rnd.positions:
                checkpoints.sync(rnd, data=False)
            checkpoints.finish(rnd)
            committed[0] = covered
        if n % CHECKPOINT_EVERY == 0:
            if overlap:
                began = checkpoints.begin()
                if began is not None:
                    checkpoints.sync(began, data=True)
                    in_flight = (began, handled)
            else:
                sink.checkpoint()
                committed[0] = handled
    assert in_flight is None or overlap
    if in_flight is not None:
        rnd, covered = in_flight
        checkpoints.record(rnd)
        checkpoints.sync(rnd, data=False)
        checkpoints.finish(rnd)
        committed[0] = covered
    sink.checkpoint()
    committed[0] = handled
    return sink


def _recover_and_replay(files: ModelFiles, committed: int, sync: str = "syncfs") -> FileSink:
    """A restart: recovery, the replay from the committed offset (other batch sizes), its end,
    and a checkpoint."""
    sink = _sink(files, sync)
    sink.recover(lambda session: True)
    for batch in _batches(RECORDS[committed:], REPLAY_BATCH):
        sink.write(batch)
    sink.caught_up()
    sink.checkpoint()
    return sink


def _check_exact(files: ModelFiles, sink: FileSink, where: str) -> None:
    assert files.files() == EXPECTED, where
    assert sink.corrupt_sessions() == {}, where
    assert not sink.sessions_io.discontinuities, where  # a crash never looks like a reader
    for session, data in EXPECTED.items():
        position = _recorded(files, session)
        assert position is not None, where
        assert (position.size, position.entries) == (len(data), data.count(b"\n")), where


def _recorded(files: ModelFiles, session: str) -> Any:
    return read_recorded(ROOT, session, files)


def _steps(*, sync: str, overlap: bool = False) -> int:
    files = ModelFiles()
    _run(files, [0], sync=sync, overlap=overlap)
    assert files.files() == EXPECTED
    return files.steps


#: How checkpoints make files durable (streams/sink/durability.py): one syncfs, or each file;
#: and each file with descriptors closed between checkpoints (three for four sessions).
SYNCS = ["syncfs", "fsync", "fsync-evicting"]
STEPS = {sync: _steps(sync=sync) for sync in SYNCS}
OVERLAPPED_STEPS = {sync: _steps(sync=sync, overlap=True) for sync in SYNCS}
VARIANTS = [
    "killed",
    "killed_mid_write",
    "power",
    "power_zero_tail",
    "power_cut_short",
    "power_data_first",
    "power_positions_first",
]


def _crash(
    step: int, *, sync: str, overlap: bool = False
) -> tuple[ModelFiles, tuple[int, int, bytes] | None, int]:
    """The worker crashed before ``step`` (at STEPS: after its last one); the files, the
    interrupted write (if any) and the committed offset."""
    files = ModelFiles(crash_at=step)
    committed = [0]
    torn = None
    try:
        _run(files, committed, sync=sync, overlap=overlap)
    except Crash as crash:
        torn = crash.torn
    return files, torn, committed[0]


@pytest.mark.parametrize("sync", SYNCS)
def test_the_scenario_covers_creates_writes_checkpoints_and_repeats(sync: str) -> None:
    files = ModelFiles()
    sink = _run(files, [0], sync=sync)
    assert STEPS[sync] > 50
    assert sorted(EXPECTED) == ["s1", "s2", "s3", "s4"]
    assert sum(d.count(b"\n") for d in EXPECTED.values()) == len(RECORDS) - 3  # three repeats
    # The sink never cuts a data file it writes.
    assert [t for t in files.truncations if t[0].endswith(FILE_NAME)] == []
    # Positions go to the output partitions' logs, which are rewritten during the scenario.
    assert any(w.startswith(f"rename {ROOT}/.positions/") for w in files.history)
    # Each file synced by itself, or the whole file system at once.
    assert ("syncfs" in files.history) == (sync == "syncfs")
    # With three descriptors for four sessions, data files are closed and opened again.
    assert (sink.fds.opened > len(EXPECTED)) == (sync == "fsync-evicting")


FIRST_CASES = [
    (sync, mode, step)
    for sync in SYNCS
    for mode, steps in (("sequential", STEPS[sync]), ("overlapped", OVERLAPPED_STEPS[sync]))
    for step in range(steps + 1)
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("sync", "mode", "step"), FIRST_CASES)
def test_a_crash_at_any_step_recovers_byte_exact(
    sync: str, mode: str, step: int, variant: str
) -> None:
    files, torn, committed = _crash(step, sync=sync, overlap=mode == "overlapped")
    if variant == "killed_mid_write" and torn is None:
        variant = "killed"  # no write was in flight at this step: a plain kill
    after = files.crashed(variant, torn)
    sizes = {s: len(d) for s, d in after.files().items()}
    sink = _recover_and_replay(after, committed, sync)
    _check_exact(
        after, sink, f"{sync}, {mode}: crash before step {step}, {variant}, committed {committed}"
    )
    if variant.startswith("killed"):
        # After a SIGKILL no data file gets shorter: what was there is written over.
        for path, _before, size in after.truncations:
            if PurePosixPath(path).name == FILE_NAME:
                assert size >= sizes[PurePosixPath(path).parent.name], (path, size, step)


# A second crash, during the recovery and replay: for every third first crash point (a power
# loss that tore every unsynced write), at every step of the recovery.
SECOND_VARIANTS = ["killed", "power", "power_zero_tail"]


def _recovery_steps(step: int, sync: str) -> int:
    files, _, committed = _crash(step, sync=sync)
    probe = files.crashed("power_cut_short", None)
    _recover_and_replay(probe, committed, sync)
    return probe.steps


SECOND_CASES = [
    (sync, step, second)
    for sync in SYNCS
    for step in range(0, STEPS[sync] + 1, 3)
    for second in range(_recovery_steps(step, sync) + 1)
]


@pytest.mark.parametrize("variant", SECOND_VARIANTS)
@pytest.mark.parametrize(("sync", "step", "second"), SECOND_CASES)
def test_a_crash_during_recovery_recovers_byte_exact(
    sync: str, step: int, second: int, variant: str
) -> None:
    files, _, committed = _crash(step, sync=sync)
    after = files.crashed("power_cut_short", None)
    after.crash_at = second
    torn = None
    try:
        _recover_and_replay(after, committed, sync)
    except Crash as crash:
        torn = crash.torn
    again = after.crashed(variant, torn)
    sink = _recover_and_replay(again, committed, sync)
    _check_exact(
        again, sink, f"{sync}: first crash before step {step}, second before {second}, {variant}"
    )


def test_the_model_covers_hundreds_of_crash_points() -> None:
    first = len(FIRST_CASES) * len(VARIANTS)
    second = len(SECOND_CASES) * len(SECOND_VARIANTS)
    print(
        f"crash model: {len(FIRST_CASES)} crash points x {len(VARIANTS)} variants = {first}; "
        f"then {len(SECOND_CASES)} x {len(SECOND_VARIANTS)} = {second} crashes in recovery"
    )
    assert first > 1000 and second > 600
