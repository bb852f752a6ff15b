"""How checkpoints make files durable (streams/sink/durability.py): the choice per state root,
and the per-file way (every written file synced, every new entry's parent synced, nothing
closed unsynced) on real files, with a spy recording the system calls."""

from __future__ import annotations

import errno
import resource
from pathlib import Path

import pytest

from streams.errors import ConfigError, SinkError
from streams.settings import load
from streams.sink import durability
from streams.sink.durability import HONOURS_SYNCFS, SyncMode, choose_sync, file_system_of
from streams.sink.fileio import OsFiles, StrPath
from streams.sink.files import FILE_NAME, FileSink
from streams.sink.position import POSITION_NAME, SinkPosition, write_position
from streams.sink.positionlog import read_recorded

from .test_sink import lines

FUSE_MAGIC = 0x65735546


class Spy(OsFiles):
    """The OS file layer, recording syncs, closes and renames by path; can fail a datasync."""

    def __init__(self) -> None:
        self.paths: dict[int, str] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_datasync = False

    def open(self, path: StrPath, *, create: bool = False, readonly: bool = False) -> int:
        fd = super().open(path, create=create, readonly=readonly)
        self.paths[fd] = str(path)
        return fd

    def open_dir(self, path: StrPath) -> int:
        fd = super().open_dir(path)
        self.paths[fd] = str(path)
        return fd

    def dup(self, fd: int) -> int:
        copy = super().dup(fd)
        self.paths[copy] = self.paths[fd]
        return copy

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        self.calls.append(("pwrite", self.paths[fd]))
        return super().pwrite(fd, data, offset)

    def datasync(self, fd: int) -> None:
        if self.fail_datasync:
            raise OSError(errno.EIO, "Input/output error (injected)")
        self.calls.append(("fdatasync", self.paths[fd]))
        super().datasync(fd)

    def fsync(self, fd: int) -> None:
        self.calls.append(("fsync", self.paths[fd]))
        super().fsync(fd)

    def syncfs(self, fd: int) -> None:
        self.calls.append(("syncfs", self.paths[fd]))
        super().syncfs(fd)

    def close(self, fd: int) -> None:
        self.calls.append(("close", self.paths.pop(fd)))
        super().close(fd)

    def replace(self, source: StrPath, target: StrPath) -> None:
        self.calls.append(("rename", f"{source} -> {target}"))
        super().replace(source, target)

    def synced(self, kind: str) -> list[str]:
        return [path for call, path in self.calls if call == kind]


# -- the choice -------------------------------------------------------------------------------


def test_auto_trusts_syncfs_only_on_file_systems_that_honour_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    magic, name = file_system_of(tmp_path)
    choice = choose_sync(tmp_path)
    assert choice.file_system == name
    assert choice.mode is (SyncMode.SYNCFS if magic in HONOURS_SYNCFS else SyncMode.FSYNC)

    monkeypatch.setattr(durability, "file_system_of", lambda path: (FUSE_MAGIC, "fuse"))
    fuse = choose_sync(tmp_path)
    assert (fuse.mode, fuse.file_system) == (SyncMode.FSYNC, "fuse")
    assert fuse.describe().startswith("fsync (fuse: syncfs is not known to persist here")
    forced = choose_sync(tmp_path, "syncfs")
    assert (forced.mode, forced.reason) == (SyncMode.SYNCFS, "set by ESCALATIONS_SYNC")

    monkeypatch.setattr(durability, "file_system_of", lambda path: (0xEF53, "ext4"))
    assert choose_sync(tmp_path).mode is SyncMode.SYNCFS
    monkeypatch.setattr(durability, "_kernel", lambda: (5, 4))  # syncfs errors not reported
    assert choose_sync(tmp_path).mode is SyncMode.FSYNC
    assert choose_sync(tmp_path, SyncMode.FSYNC).mode is SyncMode.FSYNC


def test_a_path_without_a_file_system_gets_each_file_synced(tmp_path: Path) -> None:
    choice = choose_sync(tmp_path / "missing")
    assert (choice.mode, choice.file_system) == (SyncMode.FSYNC, "unknown")


def test_the_setting_is_one_of_three_ways() -> None:
    assert load({"ESCALATIONS_SYNC": "FSYNC"}).sync == "fsync"
    assert load({}).sync == "auto"
    with pytest.raises(ConfigError, match="ESCALATIONS_SYNC='fdatasync' must be one of auto"):
        load({"ESCALATIONS_SYNC": "fdatasync"})


def test_a_fuse_root_is_synced_file_by_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durability, "file_system_of", lambda path: (FUSE_MAGIC, "fuse"))
    spy = Spy()
    sink = FileSink(tmp_path / "state", files=spy)
    sink.check_root()
    sink.write([*lines("s1", 0), *lines("s2", 1)])
    sink.checkpoint()
    assert sink.syncer.durability().mode is SyncMode.FSYNC
    assert spy.synced("syncfs") == []
    data = {str(tmp_path / "state" / s / FILE_NAME) for s in ("s1", "s2")}
    assert data <= set(spy.synced("fdatasync"))


# -- the per-file way -------------------------------------------------------------------------


def test_each_written_file_and_each_new_entry_is_synced(tmp_path: Path) -> None:
    root = tmp_path / "state"
    spy = Spy()
    sink = FileSink(root, files=spy, sync="fsync")
    sink.write([*lines("s1", 0, 1), *lines("s2", 2)])
    sink.checkpoint()

    data = {str(root / s / FILE_NAME) for s in ("s1", "s2")}
    assert data <= set(spy.synced("fdatasync"))
    # The sessions' directories in the root, and the data files in them.
    assert {str(root), str(root / "s1"), str(root / "s2")} <= set(spy.synced("fsync"))
    assert read_recorded(root, "s1") is not None

    spy.calls.clear()
    sink.write(lines("s1", 3))
    sink.checkpoint()
    # Only what changed: s1's file (s2 was not written), no directory (no new entry).
    assert [p for p in spy.synced("fdatasync") if p in data] == [str(root / "s1" / FILE_NAME)]
    assert spy.synced("fsync") == []


def test_a_data_file_created_in_an_existing_directory_gets_its_entry_synced(
    tmp_path: Path,
) -> None:
    # The directory was there (made by the runtime, or emptied by a reader): the file is new.
    root = tmp_path / "state"
    (root / "s1").mkdir(parents=True)
    spy = Spy()
    sink = FileSink(root, files=spy, sync="fsync")
    sink.write(lines("s1", 0))
    sink.checkpoint()
    assert str(root / "s1") in spy.synced("fsync")


def test_a_descriptor_is_never_closed_with_unsynced_lines(tmp_path: Path) -> None:
    # Three descriptors for eight sessions: the cache closes some between checkpoints. A
    # writeback error is reported on the descriptor that was open: each is synced first.
    spy = Spy()
    sink = FileSink(tmp_path / "state", files=spy, sync="fsync", max_open_files=3)
    for offset in range(3):
        sink.write([*(line for n in range(8) for line in lines(f"s{n}", offset))])
    unsynced: set[str] = set()
    closed_unsynced = []
    for call, path in spy.calls:
        if not path.endswith(FILE_NAME):
            continue
        if call == "pwrite":
            unsynced.add(path)
        elif call == "fdatasync":
            unsynced.discard(path)
        elif call == "close" and path in unsynced:
            closed_unsynced.append(path)
    assert any(call == "close" for call, _ in spy.calls)
    assert closed_unsynced == []
    sink.checkpoint()
    for n in range(8):
        assert (tmp_path / "state" / f"s{n}" / FILE_NAME).read_bytes().count(b"\n") == 3


def test_a_sync_failed_before_a_close_fails_the_next_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "state"
    spy = Spy()
    sink = FileSink(root, files=spy, sync="fsync", max_open_files=3)
    spy.fail_datasync = True
    sink.write([*(line for n in range(6) for line in lines(f"s{n}", 0))])  # closes some
    spy.fail_datasync = False
    with pytest.raises(SinkError, match=r"durable.*Input/output error") as info:
        sink.checkpoint()
    assert not isinstance(info.value, OSError)  # never retried: the worker stops uncommitted
    assert all(read_recorded(root, f"s{n}") is None for n in range(6))


def test_a_new_position_file_is_synced_before_it_is_renamed_into_place(tmp_path: Path) -> None:
    spy = Spy()
    directory = tmp_path / "s1"
    directory.mkdir()
    write_position(spy, directory, SinkPosition(size=10, entries=1))
    tmp = str(directory / (POSITION_NAME + ".tmp"))
    renamed = spy.calls.index(("rename", f"{tmp} -> {directory / POSITION_NAME}"))
    assert ("fdatasync", tmp) in spy.calls[:renamed]
    assert ("fsync", str(directory)) in spy.calls[renamed:]


def test_per_file_syncing_fits_twice_the_cache_in_the_open_file_limit(tmp_path: Path) -> None:
    # Each synced descriptor is duplicated during a checkpoint; evictions come an eighth at a time.
    sink = FileSink(tmp_path / "state", sync="fsync", max_open_files=64)
    sink.check_root()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == resource.RLIM_INFINITY or soft >= 2 * 64
    assert (sink.fds.capacity, sink.fds.evict_batch) == (64, 8)
    assert FileSink(tmp_path / "other", sync="syncfs", max_open_files=64).fds.evict_batch == 1
