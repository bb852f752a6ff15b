"""Making the written files durable, the way chosen for the state root (see
:mod:`streams.sink.durability`): one ``syncfs``, or an ``fdatasync`` of each file changed since
its last sync and an ``fsync`` of each directory whose entries changed, from a bounded pool of
threads. Also syncs a descriptor the cache closes with unsynced changes (a writeback error is
reported on the descriptor that was open, never lost with it). A failed sync is never retried
(a retry can report success for pages that were lost): it stops the worker uncommitted.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Final

from streams.errors import SinkError
from streams.sink.durability import SyncChoice, SyncMode, choose_sync
from streams.sink.fdcache import MIN_CAPACITY, Descriptors
from streams.sink.fileio import FileLayer, StrPath, raise_open_file_limit
from streams.sink.state import SessionState

__all__ = ["SYNC_THREADS", "Syncer"]

log = logging.getLogger(__name__)

#: Files synced at once where each is synced (``fdatasync`` waits on the device: the journal
#: commits of concurrent calls are shared).
SYNC_THREADS: Final = 16
#: syncfs errors that mean "not available here", not "the data did not make it".
_NO_SYNCFS: Final = frozenset({errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})


class Syncer:
    """Syncs a state root's files for the sink (thread-safe: the sink's lock is taken for the
    moments its states are read)."""

    def __init__(
        self,
        files: FileLayer,
        root: Path,
        fds: Descriptors,
        lock: threading.Lock,
        created: set[str],
        fsync: bool = True,
        mode: SyncMode = SyncMode.AUTO,
    ) -> None:
        self.files, self.root, self.fds, self.lock = files, root, fds, lock
        #: Directories whose entries changed since the last sync (the sessions' files add).
        self.created = created
        self.fsync = fsync
        self.mode = mode  # ESCALATIONS_SYNC
        self._choice: SyncChoice | None = None
        #: A sync that failed outside a checkpoint (a descriptor synced before it was closed):
        #: the next checkpoint raises it, so nothing is committed over the lost data.
        self.failure: OSError | None = None
        self.calls = 0  # sync system calls so far
        #: Threads syncing files at once where each file is synced (1: in the calling thread).
        self.threads = SYNC_THREADS
        self._pool: ThreadPoolExecutor | None = None
        self._root_fd: int | None = None

    def sync(self, states: Iterable[SessionState]) -> None:
        """Everything written so far durable, the way chosen for the state root (see
        :mod:`streams.sink.durability`); a failure stops the worker (no retry)."""
        try:
            if self.durability().mode is SyncMode.SYNCFS and self._syncfs():
                return
            self._sync_each(states)
        except OSError as exc:
            raise SinkError(f"cannot make the files under {self.root} durable: {exc}") from exc

    def _syncfs(self) -> bool:
        """One ``syncfs`` of the root's file system; False where the platform has none (the
        sink then syncs each file from now on)."""
        created = self.created
        try:
            if self._root_fd is None:
                self._root_fd = self.files.open_dir(self.root)
            covered = set(created)
            self.files.syncfs(self._root_fd)
        except OSError as exc:
            if exc.errno not in _NO_SYNCFS:
                raise
            log.warning("sink: syncfs is not available (%s): syncing each file instead", exc)
            self._choice = SyncChoice(SyncMode.FSYNC, self.durability().file_system, str(exc))
            self._fit_cache(self.fds.capacity)
            return False
        self.calls += 1
        created.difference_update(covered)
        return True

    def _sync_each(self, states: Iterable[SessionState]) -> None:
        """``fdatasync`` of each state's data file changed since its last sync, and ``fsync``
        of each directory whose entries changed, from a bounded pool of threads. The
        descriptors are duplicated under the sink's lock, then synced without it: writes,
        and the descriptor cache closing the originals, go on meanwhile."""
        files = self.files
        work: list[tuple[SessionState, int, int]] = []  # (state, duplicate, changes covered)
        unsure: list[SessionState] = []  # directories this worker never synced
        with self.lock:
            if self.failure is not None:
                raise self.failure  # a descriptor closed earlier failed its sync
            try:
                for state in states:
                    if state.changes != state.synced_changes and state.data_fd >= 0:
                        work.append((state, files.dup(state.data_fd), state.changes))
                    if not state.entries_synced:
                        unsure.append(state)
            except BaseException:
                for _, fd, _ in work:
                    files.close(fd)
                raise
            # Entries another process made (a worker killed before its checkpoint) may never
            # have been synced: each directory once, with the root that holds it.
            created = self.created
            created.update(s.dir_path for s in unsure)
            if unsure:
                created.add(str(self.root))
            directories = sorted(created)
            created.clear()
        calls: list[Callable[[], None]] = [
            partial(_datasync_closing, files, fd) for _, fd, _ in work
        ]
        calls += [partial(_fsync_dir, files, d) for d in directories]
        try:
            self._parallel(calls)
        except BaseException:
            with self.lock:
                self.created.update(directories)
            raise
        self.calls += len(calls)
        with self.lock:
            for state, _, changes in work:
                state.synced_changes = max(state.synced_changes, changes)
            for state in unsure:
                state.entries_synced = True

    def durability(self) -> SyncChoice:
        """How the files under the root are made durable (decided once, from the root's file
        system and ``mode``; see :mod:`streams.sink.durability`)."""
        choice = self._choice
        if choice is None:
            choice = self._choice = choose_sync(self.root, self.mode)
            self._fit_cache(self.fds.capacity)
        return choice

    def decide(self, max_open_files: int) -> None:
        """Decides for the root as it is mounted now, and fits the descriptor cache to the
        open-file limit: where each file is synced, a checkpoint duplicates the descriptors
        it syncs, so the limit must hold twice the cache."""
        self._choice = None
        per_file = 2 if self.durability().mode is SyncMode.FSYNC else 1
        self._fit_cache(raise_open_file_limit(per_file * max_open_files) // per_file)

    def _fit_cache(self, capacity: int) -> None:
        fds = self.fds
        fds.capacity = max(MIN_CAPACITY, capacity)
        # Where a close costs a sync, a full cache closes an eighth of itself at once.
        fsync = self.durability().mode is SyncMode.FSYNC
        fds.evict_batch = max(1, fds.capacity // 8) if fsync else 1

    def before_close(self, states: list[SessionState]) -> None:
        """Where each file is synced by itself, descriptors with unsynced changes are synced
        (together) before the cache closes them: a writeback error is reported on them, not
        lost with them."""
        if not self.fsync or self.durability().mode is not SyncMode.FSYNC:
            return
        unsynced = [s for s in states if s.changes != s.synced_changes]
        if unsynced:
            self.sync_closing(unsynced)

    def sync_closing(self, states: list[SessionState]) -> None:
        """``fdatasync`` of descriptors the cache is about to close (under the sink's lock);
        a failure is kept in ``failure`` for the next checkpoint to raise."""
        files = self.files
        try:
            self._parallel([partial(files.datasync, s.data_fd) for s in states])
        except OSError as exc:
            log.error("sink: fdatasync of a file before closing it failed: %s", exc)
            if self.failure is None:
                self.failure = exc
            return
        self.calls += len(states)
        for state in states:
            state.synced_changes = state.changes

    def _parallel(self, calls: list[Callable[[], None]]) -> None:
        """Runs every call, in up to ``threads`` threads (each a slice, in order);
        raises the first failure once all have run."""
        threads = min(self.threads, len(calls))
        if threads <= 1:
            failures = _run_all(calls)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, "escalations-sync")
            slices = [calls[n::threads] for n in range(threads)]
            failures = [f for found in self._pool.map(_run_all, slices) for f in found]
        if failures:
            raise failures[0]

    def sync_directory(self, directory: StrPath) -> None:
        _fsync_dir(self.files, directory)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._root_fd is not None:
            self.files.close(self._root_fd)
            self._root_fd = None


def _run_all(calls: list[Callable[[], None]]) -> list[BaseException]:
    """Runs every call; returns what they raised (a sync failure does not skip the others)."""
    failures: list[BaseException] = []
    for call in calls:
        try:
            call()
        except OSError as exc:
            failures.append(exc)
    return failures


def _datasync_closing(files: FileLayer, fd: int) -> None:
    try:
        files.datasync(fd)
    finally:
        files.close(fd)


def _fsync_dir(files: FileLayer, directory: StrPath) -> None:
    fd = files.open_dir(directory)
    try:
        files.fsync(fd)
    finally:
        files.close(fd)
