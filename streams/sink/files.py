"""The file sink: ``<state root>/<session id>/pending_escalations.jsonl``, exactly once.

Cheap work per batch, durability as a checkpoint (the Kafka Connect / Flink model):

- :meth:`FileSink.write` appends each state directory's new lines with one ``pwrite`` on a
  cached descriptor, under the directory's lock (a ``flock`` of the data file itself): visible
  at once, not synced.
- :meth:`FileSink.checkpoint` (every ``ESCALATIONS_CHECKPOINT_INTERVAL_MS``, on revoke and on
  stop; the source commits the offsets it had handled when it began, once it returned) notes
  each written session's position, makes every file written so far durable with one
  ``syncfs(2)``, appends the noted positions (size, entries, last source offset per source
  partition) to the output partitions' position logs (:mod:`streams.sink.positionlog`), and
  syncs the logs. The worker runs its phases beside the next batches (see
  :mod:`streams.sink.checkpoint`).
- :meth:`FileSink.recover` (on partition assignment) reads the position logs and reloads the
  owned directories. Bytes past
  a recorded position are kept: the replay from the committed offsets writes the same lines
  again, so they are compared and written over, and the file is cut only at the first byte
  that differs (a torn last line is completed). :meth:`FileSink.caught_up` cuts what the
  replay did not reproduce once it has reached the end of the partitions.

Lines at or below a session's recorded source offsets are skipped (already written), so the
output topic's repeats write nothing twice. A directory whose file is shorter than what was
recorded or written (truncated, deleted, or deleted as a whole while this worker knew it) is
*corrupt*: its lines are skipped until ``escalations sink rebuild`` restores it.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from streams.core.records import SinkLine, session_id_problem
from streams.errors import SinkCorruptionError, SinkError
from streams.sink.checkpoint import CheckpointResult, Checkpoints
from streams.sink.durability import SyncChoice, SyncMode, choose_sync
from streams.sink.fdcache import MIN_CAPACITY, Descriptors
from streams.sink.fence import Fence
from streams.sink.fileio import OS_FILES, FileLayer, raise_open_file_limit, read_all, write_all
from streams.sink.position import SinkPosition, write_position
from streams.sink.positionlog import PositionLogs, new_epoch
from streams.sink.sessions import FILE_NAME, LOCK_NAME, RELOADS, LockBusy, SessionFiles
from streams.sink.state import SessionState, Tail, advance, fresh_lines

__all__ = [
    "DEFAULT_MAX_OPEN_FILES",
    "FILE_NAME",
    "LOCK_NAME",
    "CheckpointResult",
    "FileSink",
    "LockBusy",
    "WriteResult",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_OPEN_FILES: Final = 1024
#: Bytes written since the last checkpoint that make the next one due at once.
CHECKPOINT_BYTES: Final = 64 * 1024 * 1024
#: Seconds without a write after which an idle sink closes its cached descriptors.
IDLE_CLOSE_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class WriteResult:
    #: The position (written, not yet durable) of each session that got lines.
    positions: dict[str, SinkPosition]
    appended: int  # lines appended; the rest were at or below a recorded offset
    corrupt: dict[str, str] = field(default_factory=dict)  # sessions skipped, and why


class FileSink:
    """Appends lines per state directory; a checkpoint makes them durable and records positions.

    Thread-safe: one write, checkpoint or recovery at a time (they run in worker threads);
    the views (``known_positions``, ``corrupt_sessions``) may be read from the event loop.
    """

    def __init__(
        self,
        root: Path,
        *,
        fsync: bool = True,
        max_open_files: int = DEFAULT_MAX_OPEN_FILES,
        files: FileLayer = OS_FILES,
        clock: Callable[[], float] = time.monotonic,
        log_of: Callable[[str], str] | None = None,
        sync: SyncMode | str = SyncMode.AUTO,
    ) -> None:
        self.root = root.resolve()
        #: A session's output partition (``topic:partition``): the position log that records
        #: it. None: the source partition of its last line (tools, tests).
        self.log_of = log_of
        #: False: lines and positions reach the page cache only (benchmarks, throwaway state):
        #: a killed process loses nothing, a power loss or kernel crash can.
        self.fsync = fsync
        #: How checkpoints make files durable (``ESCALATIONS_SYNC``), decided for the root
        #: once (:meth:`durability`).
        self.sync_mode = SyncMode(sync)
        self._durability: SyncChoice | None = None
        #: A sync that failed outside a checkpoint (a descriptor synced before it was closed):
        #: the next checkpoint raises it, so nothing is committed over the lost data.
        self.sync_failure: OSError | None = None
        self.files = files
        self.clock = clock
        self.max_open_files = max_open_files
        self.fds = Descriptors(files, max_open_files)
        self.fds.before_close = self._sync_before_close
        self.logs = PositionLogs(files, self.root, fsync=fsync)
        #: The owner tokens of the output partitions assigned last (see ``fence``).
        self.fence = Fence(files, self.root)
        self.logs.fence = self.fence.check
        self.sessions_io = SessionFiles(files, self.fds, self.logs, self._fence)
        self.checkpoints = Checkpoints(self)
        self.states: dict[str, SessionState] = {}
        #: Per session, the most this worker saw in the file (views; a file that later holds
        #: fewer bytes, or a directory that vanishes, is corrupt).
        self._known: dict[str, SinkPosition] = {}
        self._corrupt: dict[str, str] = {}  # session -> why its lines are being skipped
        self.dirty: set[str] = set()  # sessions written since the last checkpoint
        self._tails: set[str] = set()  # recovered tails the replay has not explained yet
        self.unsynced_bytes = 0
        #: Counts the assignments (recoveries): a checkpoint that began under an earlier one
        #: outlived a revoke and must not finish (its offsets are not ours to commit).
        self.assignment = 0
        self.checkpoint_bytes = CHECKPOINT_BYTES
        self.last_write = clock()
        #: Guards the views for the moments they change or are copied.
        self._views = threading.Lock()
        self.lock = threading.Lock()  # one write, checkpoint or recovery at a time
        self.on_sync: Callable[[float], None] | None = None  # each checkpoint's seconds

    # -- set-up and names -----------------------------------------------------------------------

    def check_root(self) -> None:
        """Fail fast, with a clear error, when the state root cannot be written; fit the
        descriptor cache to the process's open-file limit."""
        try:
            made = not self.root.exists()
            self.root.mkdir(parents=True, exist_ok=True)
            if made and self.fsync:  # the root's own entry, before anything is committed in it
                fd = self.files.open_dir(self.root.parent)
                try:
                    self.files.fsync(fd)
                finally:
                    self.files.close(fd)
            # Nameless where the OS allows (O_TMPFILE): it cannot collide with a session.
            with tempfile.TemporaryFile(dir=self.root) as probe:
                probe.write(b"probe")
                probe.flush()
        except OSError as exc:
            raise SinkError(
                f"ESCALATIONS_STATE_ROOT={str(self.root)!r} is not a writable directory: {exc}"
            ) from exc
        self._durability = None  # decided again for the root as it is now mounted
        # Where each file is synced, a checkpoint duplicates the descriptors it syncs: the
        # open-file limit must hold twice the cache.
        per_file = 2 if self.durability().mode is SyncMode.FSYNC else 1
        self._fit_cache(raise_open_file_limit(per_file * self.max_open_files) // per_file)

    def _fit_cache(self, capacity: int) -> None:
        self.fds.capacity = max(MIN_CAPACITY, capacity)
        # Where a close costs a sync, a full cache closes an eighth of itself at once.
        fsync = self.durability().mode is SyncMode.FSYNC
        self.fds.evict_batch = max(1, self.fds.capacity // 8) if fsync else 1

    def durability(self) -> SyncChoice:
        """How checkpoints make the files under the root durable (decided once, from the
        root's file system and ``sync``; see :mod:`streams.sink.durability`)."""
        choice = self._durability
        if choice is None:
            choice = self._durability = choose_sync(self.root, self.sync_mode)
            self._fit_cache(self.fds.capacity)
        return choice

    def syncfs_missing(self, exc: OSError) -> None:
        """``syncfs`` is not available here: sync each file from now on."""
        log.warning("sink: syncfs is not available (%s): syncing each file instead", exc)
        self._durability = SyncChoice(
            SyncMode.FSYNC, self.durability().file_system, f"syncfs failed: {exc}"
        )
        self._fit_cache(self.fds.capacity)

    def directory(self, session_id: str) -> Path:
        problem = session_id_problem(session_id)
        if problem is not None:
            raise SinkError(f"refusing state directory: {problem}")
        path = self.root / session_id
        if path.parent != self.root:  # belt and braces: never leave the root
            raise SinkError(f"state directory for {session_id!r} escapes {self.root}")
        return path

    def sessions(self) -> list[str]:
        """Every state directory under the root whose name is a valid session id."""
        try:
            names = self.files.list_dirs(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n for n in names if session_id_problem(n) is None)

    # -- views ----------------------------------------------------------------------------------

    def known_positions(self) -> dict[str, SinkPosition]:
        """The last position this sink saw per session (written; for views and metrics)."""
        with self._views:
            return dict(self._known)

    def corrupt_sessions(self) -> dict[str, str]:
        """Sessions whose lines are being skipped until rebuilt, and why (a copy)."""
        with self._views:
            return dict(self._corrupt)

    def recorded(self, session_id: str) -> SinkPosition | None:
        """The session's recorded (checkpointed) position, as recovery would read it now (its
        position file merged with the position logs); None when nothing is recorded. Raises
        ``SinkCorruptionError`` for an unreadable position file."""
        directory = self.directory(session_id)
        with self.lock:
            self.logs.refresh()
            return self.logs.recorded(session_id, directory)

    @property
    def syncs(self) -> int:
        """Positions recorded durably so far (one per written directory and checkpoint)."""
        return self.checkpoints.recorded

    @property
    def sync_seconds(self) -> float:
        """Wall time of the checkpoints so far."""
        return self.checkpoints.seconds

    def checkpoint_due(self) -> bool:
        """Enough bytes were written since the last checkpoint to take one now."""
        return self.unsynced_bytes >= self.checkpoint_bytes

    def summary(self) -> str:
        """The sink's counters, for the worker's log lines."""
        return self.checkpoints.summary(self.fds)

    # -- the work -------------------------------------------------------------------------------

    def write(
        self, lines: Iterable[SinkLine], *, wait: bool = True, assignment: int | None = None
    ) -> WriteResult:
        """Appends each session's new lines (one ``pwrite`` per state directory, not synced).

        Lines at or below a session's recorded source offsets are skipped. A corrupt session is
        skipped and reported; an I/O error in one session does not stop the others, and is
        raised once they are written (the batch is then retried: what was written is skipped).
        With ``wait`` False a directory locked by another process raises ``LockBusy`` at once.
        ``assignment``: the sink's assignment when the batch began; a batch that ran across a
        rebalance (its revoke gave up waiting for it) writes nothing and raises ``SinkError``:
        its lines are older than what the recovery since reloaded.
        """
        by_session: dict[str, list[SinkLine]] = {}
        for item in lines:
            by_session.setdefault(item.session_id, []).append(item)
        written: dict[str, SinkPosition] = {}
        corrupt: dict[str, str] = {}
        failures: list[OSError] = []
        appended = 0
        with self.lock:
            if assignment is not None and assignment != self.assignment:
                raise SinkError(
                    "a batch begun before the last rebalance outlived the revoke: stopping "
                    "without writing it (the owner replays it from the committed offsets)"
                )
            for session_id, items in by_session.items():
                try:
                    added = self._append(session_id, items, wait)
                except SinkCorruptionError as exc:
                    self.skip(session_id, exc)
                    corrupt[session_id] = str(exc)
                    continue
                except OSError as exc:
                    failures.append(exc)
                    continue
                except LockBusy as busy:
                    busy.appended = appended
                    raise
                if added:
                    appended += added
                    written[session_id] = self.states[session_id].position
        if failures:
            raise failures[0]
        return WriteResult(written, appended, corrupt)

    def checkpoint(self) -> CheckpointResult:
        """Makes every line written so far durable and records the positions (see
        :class:`streams.sink.checkpoint.Checkpoints`); the caller commits after it."""
        return self.checkpoints.run()

    def recover(self, owns: Callable[[str], bool], partitions: Iterable[str] | None = None) -> int:
        """Forget what is known of the files (after a rebalance another worker may have written),
        then reload every state directory we own; returns how many were checked.

        Called on partition assignment (in a thread: it does file I/O). Bytes past a recorded
        position are kept for the replay to compare with (see :meth:`caught_up`).
        """
        with self.lock:
            self.assignment += 1  # a checkpoint begun before now must not finish
            if partitions is not None:
                self.fence.claim(partitions)  # before any of their sessions is read
            self.fds.clear()
            self.states.clear()
            self.dirty.clear()
            self._tails.clear()
            self.unsynced_bytes = 0
            with self._views:
                self._corrupt.clear()
            self.logs.refresh()  # what every worker recorded, up to now
            known = {name for name, position in self._known.items() if position.size}
            present = set(self.sessions())
            names = [n for n in sorted(present | known) if owns(n)]
            with self._views:
                # What this worker wrote to a file is no measure of it now: another owner may
                # have cut what was never recorded since. The recorded positions are. (A
                # directory gone as a whole stays known: it is reported, not started over.)
                for name in present.intersection(names):
                    self._known.pop(name, None)
            busy = self._reload(names)
        while busy:  # locked by another process: waited for holding no lock of ours
            for path in busy.values():
                self.sessions_io.wait_unlocked(path)
            with self.lock:
                busy = self._reload(sorted(busy))
        return len(names)

    def _reload(self, names: list[str]) -> dict[str, str]:
        """Loads each session's directory (under the sink's lock); returns those another
        process holds locked, and the file to wait on."""
        busy: dict[str, str] = {}
        for name in names:
            try:
                state = self._state(name)
                self.locked(state, lambda s: None, wait=False)
            except LockBusy as exc:
                busy[name] = exc.path
                continue
            except SinkCorruptionError as exc:
                self.skip(name, exc)
                continue
            if state.tail and state.tail_kind is Tail.FOREIGN:
                state.tail_kind = Tail.RECOVERED
            if state.tail_kind is Tail.RECOVERED:
                self._tails.add(name)
        return busy

    def caught_up(self, *, wait: bool = True) -> int:
        """The replay has reached the end of the assigned partitions: cut the recovered tails it
        did not write again (a torn write, or bytes appended outside the sink); returns how
        many bytes were cut. Tails of files without a position are kept (maybe adopted)."""
        cut = 0
        with self.lock:
            names = sorted(self._tails)
            for name in names:
                state = self.states.get(name)
                if state is None or state.tail_kind is not Tail.RECOVERED:
                    continue
                try:
                    cut += self.locked(
                        state,
                        lambda s: self.sessions_io.cut(s) if s.tail_kind is Tail.RECOVERED else 0,
                        wait=wait,
                    )
                except SinkCorruptionError as exc:
                    self.skip(name, exc)
                self._tails.discard(name)
            self._tails.clear()
        return cut

    def replace(self, session_id: str, lines: list[SinkLine]) -> SinkPosition | None:
        """Rewrite a session's file from scratch with ``lines`` (``escalations sink rebuild``).

        ``lines`` must hold every entry of the session in output-topic order; repeats are
        dropped as the sink drops them. Atomic: readers see the old file or the new one.
        Returns None, changing nothing, when the file holds more than ``lines`` explain: a
        recorded offset past them, or bytes past the recorded position (lines a worker wrote
        and has not checkpointed yet) that are not where ``lines`` put them (read more and try
        again). A worker notices the new file under the lock and reloads it.
        """
        directory = self.directory(session_id)
        files = self.files
        with self.lock:
            if files.stat(self.root) is None:
                files.mkdir(self.root)
            files.mkdir(directory)
            self._forget(session_id)  # no descriptor of ours stays on the file replaced
            locks = self._lock_for_replace(directory)
            try:
                position = self._replace_locked(directory, lines)
            finally:
                for fd in reversed(locks):
                    files.close(fd)
            if position is None:
                return None
            self._forget(session_id)
            self._seen(session_id, position)
            self._healthy(session_id)
            return position

    def release_idle(self, idle_s: float = IDLE_CLOSE_S) -> int:
        """Closes the cached descriptors once nothing was written for ``idle_s`` and everything
        is checkpointed: an idle worker keeps no file open on the volume (so it can be
        remounted or unmounted). Returns how many were closed."""
        if not len(self.fds) or self.dirty or self.clock() - self.last_write < idle_s:
            return 0
        with self.lock:
            if self.dirty or self.checkpoints.active:
                return 0
            closed = len(self.fds)
            self.fds.clear()
            self.checkpoints.close()
        return closed

    def wait_unlocked(self, busy: LockBusy) -> None:
        """Waits until the lock ``busy`` met is free, holding none of the sink's (a thread)."""
        self.sessions_io.wait_unlocked(busy.path)

    def close(self) -> None:
        """Closes every cached descriptor (tests; the worker's exit closes them anyway)."""
        with self.lock:
            self.fds.clear()
            self.checkpoints.close()

    # -- internals (called with self.lock held) -------------------------------------------------

    def _state(self, session_id: str) -> SessionState:
        state = self.states.get(session_id)
        if state is None:
            state = SessionState(session_id, self.directory(session_id))
            if self.log_of is not None:
                state.source = self.log_of(session_id)
            self.states[session_id] = state
        return state

    def locked(
        self, state: SessionState, work: Callable[[SessionState], int | None], *, wait: bool = True
    ) -> int:
        """Runs ``work`` with the directory locked and the state checked against its files."""
        known = self._known.get(state.name)
        io = self.sessions_io
        try:
            io.acquire(state, 0 if known is None else known.size, wait=wait)
        except SinkCorruptionError:
            self._forget(state.name)
            raise
        try:
            if self._corrupt:
                self._healthy(state.name)
            result = work(state)
        finally:
            io.release(state)
        if known is not state.position:
            self._seen(state.name, state.position)
        return result or 0

    def _append(self, session_id: str, items: list[SinkLine], wait: bool = True) -> int:
        state = self._state(session_id)
        seen_at = state.position if state.loaded else None
        early = fresh_lines(seen_at, items) if seen_at is not None else []
        if seen_at is not None:
            if not early:
                return 0  # every line is at or below the offsets: nothing to lock or write
            if state.data_fd >= 0 and not state.tail and session_id not in self._corrupt:
                appended = self._append_open(state, early, wait)
                if appended:
                    return appended

        def put(s: SessionState) -> int:
            # The same lines again unless the lock's check reloaded the position.
            fresh = early if s.position is seen_at else fresh_lines(s.position, items)
            if not fresh:
                return 0
            payload = b"".join(item.line for item in fresh)
            self.sessions_io.put(s, payload, len(fresh[0].line))
            self._appended(s, fresh, len(payload))
            return len(fresh)

        return self.locked(state, put, wait=wait)

    def _append_open(self, state: SessionState, fresh: list[SinkLine], wait: bool) -> int:
        """The usual write, on a file this worker holds open: under the lock, one ``stat``
        shows it is still the file and the size this worker left, then one ``pwrite``.
        Returns 0 when the file changed (the general path then reloads what it must)."""
        files = self.files
        fd = state.data_fd
        if not files.lock(fd, blocking=wait):
            raise LockBusy(state.data_path)
        try:
            self.fence.check(state.source)
            st = files.stat(state.data_path)
            at = state.position.size
            if st is None or st.identity != state.identity or st.size != at:
                return 0
            payload = b"".join(item.line for item in fresh)
            write_all(files, fd, payload, at)
        finally:
            files.unlock(fd)
        self.fds.touch(state)
        self._appended(state, fresh, len(payload))
        self._seen(state.name, state.position)
        return len(fresh)

    def _appended(self, state: SessionState, fresh: list[SinkLine], size: int) -> None:
        """Bookkeeping once ``fresh`` (``size`` bytes) is written at the state's position."""
        state.changes += 1
        # Numbered as its record will be: a checkpoint records the position itself.
        state.position = advance(state.position, fresh, size, state.recorded.seq + 1)
        if self.log_of is None:
            state.source = fresh[-1].source
        if state.dirty_since is None:
            state.dirty_since = self.clock()
        self.dirty.add(state.name)
        self.unsynced_bytes += size
        self.last_write = self.clock()

    def _lock_for_replace(self, directory: Path) -> list[int]:
        """Locks the directory for a replacement: the lock file of earlier versions where it
        exists (an earlier worker may run during an upgrade), then the data file, checked to
        still be the file at its path once locked. Returns the descriptors (closing unlocks)."""
        files = self.files
        held: list[int] = []
        try:
            try:
                legacy = files.open(directory / LOCK_NAME)
            except FileNotFoundError:
                pass
            else:
                held.append(legacy)
                files.lock(legacy)
            for _ in range(RELOADS):
                fd = files.open(directory / FILE_NAME, create=True)
                files.lock(fd)
                st = files.stat(directory / FILE_NAME)
                if st is not None and st.identity == files.fstat(fd).identity:
                    held.append(fd)
                    return held
                files.close(fd)  # replaced meanwhile: lock the new one
            raise SinkError(f"{directory / FILE_NAME} keeps being replaced")
        except BaseException:
            for fd in held:
                files.close(fd)
            raise

    def _replace_locked(self, directory: Path, lines: list[SinkLine]) -> SinkPosition | None:
        files = self.files
        fresh = fresh_lines(SinkPosition(), lines)
        payload = b"".join(item.line for item in fresh)
        position = advance(SinkPosition(), fresh, len(payload)) if fresh else SinkPosition()
        self.logs.refresh()
        try:
            recorded = self.logs.recorded(directory.name, directory) or SinkPosition()
        except SinkCorruptionError:
            recorded = SinkPosition()  # an unreadable position file: the lines decide
        if any(o > position.offsets.get(s, -1) for s, o in recorded.offsets.items()):
            return None
        current = b""
        try:
            fd = files.open(directory / FILE_NAME, readonly=True)
        except FileNotFoundError:
            pass
        else:
            try:
                current = read_all(files, fd)
            finally:
                files.close(fd)
        if len(current) > recorded.size and not payload.startswith(current):
            return None  # lines past the record that these lines do not explain
        # A new epoch: what the logs hold of the file replaced never describes this one.
        position = dataclasses.replace(position, seq=recorded.seq + 1, epoch=new_epoch())
        tmp = directory / (FILE_NAME + ".rebuild")
        fd = files.open(tmp, create=True)
        try:
            files.truncate(fd, 0)
            write_all(files, fd, payload, 0)
            files.datasync(fd)
        finally:
            files.close(fd)
        # Position first (a bigger size than the old file is never "torn"), then the file.
        write_position(files, directory, position)
        files.replace(tmp, directory / FILE_NAME)
        dir_fd = files.open_dir(directory)
        try:
            files.fsync(dir_fd)
        finally:
            files.close(dir_fd)
        return position

    def _fence(self, state: SessionState) -> None:
        self.fence.check(state.source)

    def _sync_before_close(self, states: list[SessionState]) -> None:
        """Where each file is synced by itself, descriptors with unsynced changes are synced
        (together) before the cache closes them: a writeback error is reported on them, not
        lost with them. A failure is kept for the next checkpoint to raise."""
        if not self.fsync or self.durability().mode is not SyncMode.FSYNC:
            return
        unsynced = [s for s in states if s.changes != s.synced_changes]
        if unsynced:
            self.checkpoints.sync_closing(unsynced)

    def _forget(self, session_id: str) -> None:
        """Drops what is held of a session (its descriptors, its state), not what was seen."""
        state = self.states.pop(session_id, None)
        self.dirty.discard(session_id)
        self._tails.discard(session_id)
        if state is not None:
            self.fds.close_state(state)

    def skip(self, session_id: str, exc: SinkCorruptionError) -> None:
        with self._views:
            known = self._corrupt.get(session_id)
            self._corrupt[session_id] = str(exc)
        if known != str(exc):
            log.error("sink: skipping session %s until it is rebuilt: %s", session_id, exc)

    def _healthy(self, session_id: str) -> None:
        if session_id in self._corrupt:
            with self._views:
                self._corrupt.pop(session_id, None)

    def _seen(self, session_id: str, position: SinkPosition) -> None:
        with self._views:
            self._known[session_id] = position
