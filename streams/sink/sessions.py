"""The files of one state directory: lock, load, check, append, cut.

Every method that reads or changes a directory runs between :meth:`SessionFiles.acquire` and
:meth:`SessionFiles.release`, which hold the directory's lock: a ``flock`` of its data file
(the protocol ``escalations sink rebuild`` and ``sink verify`` follow; no lock file to create
or keep open). ``acquire`` checks the worker's state against the files (one ``stat``): a
replaced file (rebuild) is reloaded, bytes another writer appended become a tail to compare
with (and its newer record is read from the position logs). A file a reader emptied, cut,
replaced or removed is a *discontinuity*: what is there now is the base the next lines follow
(a new epoch, the offsets kept: nothing is written twice), counted and logged. A directory's recorded position is read from its position file (if any)
and the position logs (:mod:`streams.sink.positionlog`); checkpoints write only the logs.
Descriptors stay open on the state (an LRU over sessions), so a batch costs a ``flock``, a
``stat``, one ``pwrite`` and an unlock per directory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Callable
from typing import Final

from streams.errors import SinkError
from streams.sink.fdcache import Descriptors
from streams.sink.fileio import FileLayer, read_all, write_all
from streams.sink.position import POSITION_NAME, SinkPosition, read_position, write_position
from streams.sink.positionlog import PositionLogs, new_epoch
from streams.sink.state import FILE_NAME, LOCK_NAME, SessionState, Tail, first_difference

__all__ = ["FILE_NAME", "LOCK_NAME", "LockBusy", "SessionFiles"]

log = logging.getLogger(__name__)

#: How many times a directory replaced under the worker is reloaded in one acquisition.
RELOADS: Final = 4


class LockBusy(Exception):
    """A directory lock is held by another process and the caller asked not to wait for it
    (the event loop must not block): wait with :meth:`SessionFiles.wait_unlocked`, holding
    no lock of the sink, then do the operation again."""

    appended = 0  # lines a write appended before it met the lock

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path  # the data file whose lock is held


class _Replaced(Exception):
    """The data file is not the one the state describes: reload it under a fresh lock."""


class SessionFiles:
    """Opens, locks, reads and writes state directories through a file layer."""

    def __init__(
        self,
        files: FileLayer,
        fds: Descriptors,
        logs: PositionLogs,
        fence: Callable[[SessionState], None] = lambda state: None,
    ) -> None:
        self.files = files
        self.fds = fds
        self.logs = logs
        #: Raises when the session's partition was assigned to another worker (checked with
        #: the directory's lock held: see :mod:`streams.sink.fence`).
        self.fence = fence
        #: Directories whose entries changed since the last checkpoint (what a per-file sync
        #: must cover where ``syncfs`` is missing).
        self.created: set[str] = set()
        #: Files a reader emptied, cut, replaced or removed, by kind (see :meth:`_restart`).
        self.discontinuities: Counter[str] = Counter()

    # -- locking -----------------------------------------------------------------------------

    def acquire(self, state: SessionState, known_size: int, *, wait: bool = True) -> None:
        """Locks the directory (its data file, created if missing) and brings ``state`` in line
        with its files (released by :meth:`release`). Raises ``SinkCorruptionError`` for a
        damaged directory, and ``LockBusy`` when ``wait`` is False and another process holds
        the lock."""
        files = self.files
        for _ in range(RELOADS):
            reopened = state.data_fd < 0 and state.loaded
            if state.data_fd < 0:
                self.fds.reserve()
                try:
                    state.data_fd = self._open_data(state)
                except FileNotFoundError:
                    self._recreate(state, known_size)
                    continue
                self.fds.opened_one(state)
                if state.loaded and state.identity is None:
                    # A directory made just now: this is its first data file (a replacement
                    # since would show in the check under the lock).
                    state.identity = files.fstat(state.data_fd).identity
            else:
                self.fds.touch(state)
            self.fds.pinned = state
            if not files.lock(state.data_fd, blocking=wait):
                self.fds.pinned = None
                raise LockBusy(state.data_path)
            try:
                self.fence(state)
                if reopened and self._epoch(state) != state.position.epoch:
                    raise _Replaced  # rebuilt while closed (its inode number may be reused)
                if state.loaded:
                    self._check(state, known_size)
                else:
                    self._load(state, known_size)
            except _Replaced:
                self.release(state)
                self.fds.close_state(state)
                state.loaded = False
                continue
            except BaseException:
                self.release(state)
                raise
            return
        raise SinkError(f"{state.directory} keeps being replaced while the sink opens it")

    def _epoch(self, state: SessionState) -> int:
        """The epoch of the directory's position file (a rebuild gives the file a new one):
        the data file's identity where an inode number cannot tell, as it is once the
        descriptor is closed and its inode may go to the next file created."""
        path = f"{state.dir_path}/{POSITION_NAME}"
        if self.files.stat(path) is None:  # the usual case: one failed stat
            return 0
        own = read_position(path, self.files)
        return 0 if own is None else own.epoch

    def wait_unlocked(self, path: str) -> None:
        """Waits (blocking, on a descriptor of its own) until nobody holds ``path``'s lock.
        Call it holding no lock of the sink: another process may hold this one for long."""
        try:
            fd = self.files.open(path, readonly=True)
        except FileNotFoundError:
            return
        try:
            self.files.lock(fd, exclusive=False)
            self.files.unlock(fd)
        finally:
            self.files.close(fd)

    def release(self, state: SessionState) -> None:
        try:
            self.files.unlock(state.data_fd)
        finally:
            self.fds.pinned = None

    def _open_data(self, state: SessionState) -> int:
        """The data file, opened to be locked; created when the directory holds none
        (``FileNotFoundError``: the directory is missing)."""
        try:
            return self.files.open(state.data_path)
        except FileNotFoundError:
            if self.files.stat(state.dir_path) is None:
                raise
        state.replaced = state.loaded  # removed by a reader: an empty file in its place
        fd = self.files.open(state.data_path, create=True)
        self.created.add(state.dir_path)  # a new entry: synced with the data
        return fd

    def _recreate(self, state: SessionState, known_size: int) -> None:
        """The directory is missing: create it (removed by a reader when it held lines)."""
        written = max(known_size, state.position.size + state.tail)
        self.fds.close_state(state)
        root = os.path.dirname(state.dir_path)
        if self.files.stat(root) is None:
            self.files.mkdir(root)
            self.created.add(os.path.dirname(root))
        created = self.files.mkdir(state.dir_path)
        self.created.update((root, state.dir_path))
        # A directory made just now holds nothing: no need to read it under the lock.
        fresh = SinkPosition()
        logged = self.logs.latest(state.name)
        if logged is not None or written:
            # The logs hold entries of an earlier directory of this name: a new epoch, so
            # that they never describe this one; its offsets kept (never written twice).
            fresh = self._discontinuity(state, 0, "removed" if written else "", logged)
            write_position(self.files, state.directory, fresh)
        state.position = state.recorded = fresh
        state.tail, state.tail_kind = 0, Tail.NONE
        state.identity = None
        state.dirty_since = None
        state.generation += 1
        state.loaded = created

    # -- reading the directory ----------------------------------------------------------------

    def _load(self, state: SessionState, known_size: int) -> None:
        """Reads the recorded position and the data file's size (under the lock)."""
        st = self.files.stat(state.data_path)
        if st is None or st.identity != self.files.fstat(state.data_fd).identity:
            raise _Replaced  # replaced (or removed) between our open and our lock
        position = self.logs.recorded(state.name, state.directory)
        size = st.size
        state.identity = st.identity
        replaced, state.replaced = state.replaced, False
        epoch = 0 if position is None else position.epoch
        if replaced and epoch == state.position.epoch:  # a reader's file, not a rebuild's
            self._restart(state, size, "replaced", position)
        elif size < max(known_size, 0 if position is None else position.size):
            self._restart(state, size, "truncated" if size else "emptied", position)
        elif position is None:
            state.position = state.recorded = SinkPosition()
            state.tail = size
            state.tail_kind = Tail.UNOWNED if size else Tail.NONE
        else:
            state.position = state.recorded = position
            state.tail = size - position.size
            state.tail_kind = Tail.FOREIGN if state.tail else Tail.NONE
        state.dirty_since = None
        state.generation += 1
        state.loaded = True

    def _check(self, state: SessionState, known_size: int) -> None:
        """One ``stat``: is the data file still the one (and the size) the state says?"""
        st = self.files.stat(state.data_path)
        if (
            st is not None
            and st.identity == state.identity
            and st.size == state.position.size + state.tail
        ):
            return  # the usual case: as this worker left it
        written = max(known_size, state.position.size)
        if st is None:
            if self.files.stat(state.dir_path) is None:
                raise _Replaced  # the directory went away: acquire decides
            if state.identity is not None or written or state.tail:
                raise _Replaced  # the file went away: reopened (created empty)
            return
        if st.identity != state.identity:
            # Replaced: by a rebuild (a new epoch), a reader, or created by another writer.
            state.replaced = state.identity is not None
            raise _Replaced
        if st.size == state.position.size + state.tail:
            return
        if st.size < written:
            self._restart(state, st.size, "truncated" if st.size else "emptied", None)
            return
        self._refresh(state, st.size)

    def _restart(
        self, state: SessionState, size: int, kind: str, recorded: SinkPosition | None
    ) -> None:
        """A reader emptied, cut or replaced the file: its whole lines are the base the next
        lines follow (a torn line's fragment is cut), recorded at once under a new epoch."""
        fd = state.data_fd
        content = read_all(self.files, fd) if size else b""
        whole = content.rfind(b"\n") + 1
        if whole < len(content):
            self.files.truncate(fd, whole)
            state.changes += 1
        position = self._discontinuity(state, whole, kind, recorded)
        position = dataclasses.replace(position, entries=content.count(b"\n"))
        write_position(self.files, state.directory, position)
        state.position = state.recorded = position
        state.tail, state.tail_kind = 0, Tail.NONE
        state.generation += 1  # a checkpoint in flight records nothing of the old file

    def _discontinuity(
        self, state: SessionState, size: int, kind: str, recorded: SinkPosition | None
    ) -> SinkPosition:
        """A new epoch's position of ``size`` bytes keeping every offset known of the session
        (its lines are never written again); counted and logged as ``kind`` (if any)."""
        known = [p for p in (state.position, state.recorded, recorded) if p is not None]
        offsets: dict[str, int] = {}
        for p in known:
            for source, offset in p.offsets.items():
                offsets[source] = max(offset, offsets.get(source, -1))
        written = max(p.size for p in known)
        if kind:
            self.discontinuities[kind] += 1
            log.warning(
                "%s: %s outside the sink (%d bytes where %d were written): new lines follow "
                "what is there; `escalations sink rebuild --session %s` restores every line",
                state.data_path,
                kind if kind != "removed" else "the directory was removed",
                size,
                written,
                state.name,
            )
        stamps = [p.last_ts_us for p in known if p.last_ts_us is not None]
        return SinkPosition(
            size,
            0,
            offsets,
            max(stamps) if stamps else None,
            max(p.seq for p in known) + 1,
            epoch=new_epoch(),
        )

    def _refresh(self, state: SessionState, size: int) -> None:
        """Another writer changed the file's size: take its newer record, tail the rest."""
        self.logs.refresh()
        recorded = self.logs.recorded(state.name, state.directory)
        if recorded is not None:
            if (recorded.size, recorded.seq) > (state.recorded.size, state.recorded.seq):
                state.recorded = recorded
            if state.position.size < recorded.size <= size:
                state.position = recorded
        state.tail = size - state.position.size
        if not state.tail:
            state.tail_kind = Tail.NONE
        elif state.tail_kind is Tail.NONE:
            state.tail_kind = Tail.FOREIGN

    def _data_fd(self, state: SessionState) -> int:
        """The data file (under the lock), created if missing (its identity noted)."""
        if state.data_fd < 0:
            self.fds.reserve()
            try:
                fd = self.files.open(state.data_path)
            except FileNotFoundError:
                fd = self.files.open(state.data_path, create=True)
                self.created.add(state.dir_path)
            if state.identity is None:  # else acquire's stat, under this lock, named it
                state.identity = self.files.fstat(fd).identity
            state.data_fd = fd
            self.fds.opened_one(state)
        return state.data_fd

    # -- writing ------------------------------------------------------------------------------

    def put(self, state: SessionState, payload: bytes, first_line: int) -> None:
        """Writes ``payload`` at ``position.size``: over a tail it matches, else after cutting
        the tail at the first byte that differs (the file never shrinks past it)."""
        fd = self._data_fd(state)
        if state.tail_kind is Tail.UNOWNED:
            self._own_or_adopt(state, fd, payload, first_line)
        at = state.position.size
        if state.tail:
            existing = self.files.pread(fd, min(len(payload), state.tail), at)
            same = first_difference(existing, payload)
            if same < len(existing):
                log.warning(
                    "%s: cutting %d bytes past byte %d that differ from the lines written there",
                    state.data_path,
                    state.tail - same,
                    at + same,
                )
                self.files.truncate(fd, at + same)
                state.tail = same
        # Rewritten even where the bytes match: the page is dirtied again, so the checkpoint's
        # sync makes it durable even if an earlier writeback of it failed.
        write_all(self.files, fd, payload, at)
        if state.tail:
            state.tail = max(0, state.tail - len(payload))
            if not state.tail:
                state.tail_kind = Tail.NONE

    def _own_or_adopt(self, state: SessionState, fd: int, payload: bytes, first_line: int) -> None:
        """A data file without a position: ours if it starts as the lines we write would (a
        crash before its first checkpoint, possibly zero-filled or cut short), else adopted."""
        existing = self.files.pread(fd, min(len(payload), state.tail), 0)
        same = first_difference(existing, payload)
        if same < len(existing) and same < first_line and existing[same] != 0:
            self._adopt(state, fd)
        else:
            state.tail_kind = Tail.RECOVERED

    def _adopt(self, state: SessionState, fd: int) -> None:
        """A file written by someone else (e.g. the original writer): keep its whole lines."""
        content = read_all(self.files, fd)
        good = content.rfind(b"\n") + 1
        log.warning(
            "%s: adopting %d bytes written without a sink position (dropping a torn tail of %d)",
            state.data_path,
            good,
            len(content) - good,
        )
        if good < len(content):
            self.files.truncate(fd, good)
        position = SinkPosition(size=good, entries=content.count(b"\n"), seq=state.recorded.seq)
        write_position(self.files, state.directory, position)  # decided once: durably
        state.position = state.recorded = position
        state.tail = 0
        state.tail_kind = Tail.NONE

    def cut(self, state: SessionState) -> int:
        """Cuts the tail (the replay did not reproduce it); returns the bytes cut."""
        cut = state.tail
        if cut:
            self.files.truncate(self._data_fd(state), state.position.size)
            state.changes += 1
            log.warning(
                "%s: cut %d bytes past byte %d that the replay did not write again",
                state.data_path,
                cut,
                state.position.size,
            )
        state.tail = 0
        state.tail_kind = Tail.NONE
        return cut
