"""The file sink: ``<state root>/<session id>/pending_escalations.jsonl``, exactly once.

Cheap work per batch, durability as a checkpoint (the Kafka Connect / Flink model). ``write``
appends each session's new lines with one ``pwrite`` under the directory's lock (a ``flock``
of the data file): visible at once, not synced; lines at or below a session's recorded source
offsets are skipped, so repeats write nothing twice. ``checkpoint`` makes what was written
durable (``syncer``) and appends the positions to the position logs (``checkpoint``,
``positionlog``); the source commits after it. ``recover`` (on assignment) claims the
partitions (``fence``), reads the logs and reloads the owned directories: bytes past a
recorded position are compared with the replay and written over, and ``caught_up`` cuts what
the replay did not write again. A file shorter than its recorded position is *corrupt*: its
lines are skipped until ``escalations sink rebuild`` (``replace``) restores it.
"""

from __future__ import annotations

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
from streams.sink.durability import SyncMode
from streams.sink.fdcache import Descriptors
from streams.sink.fence import Fence
from streams.sink.fileio import OS_FILES, FileLayer, write_all
from streams.sink.position import SinkPosition
from streams.sink.positionlog import PositionLogs
from streams.sink.sessions import FILE_NAME, LOCK_NAME, LockBusy, SessionFiles
from streams.sink.state import SessionState, Tail, advance, fresh_lines
from streams.sink.syncer import Syncer
from streams.sink.views import Views

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
        self.files = files
        self.clock = clock
        self.max_open_files = max_open_files
        self.fds = Descriptors(files, max_open_files)
        self.logs = PositionLogs(files, self.root, fsync=fsync)
        self.fence = Fence(files, self.root, self.logs.created)  # owner tokens
        self.logs.fence = self.fence.check
        self.sessions_io = SessionFiles(files, self.fds, self.logs, self._fence)
        self.lock = threading.Lock()  # one write, checkpoint or recovery at a time
        created = self.sessions_io.created
        self.syncer = Syncer(files, self.root, self.fds, self.lock, created, fsync, SyncMode(sync))
        self.fds.before_close = self.syncer.before_close
        self.checkpoints = Checkpoints(self, self.syncer)
        self.states: dict[str, SessionState] = {}
        self.views = Views()
        self.dirty: set[str] = set()  # sessions written since the last checkpoint
        self._tails: set[str] = set()  # recovered tails the replay has not explained yet
        self.unsynced_bytes = 0
        #: Counts the assignments (recoveries): a checkpoint that began under an earlier one
        #: outlived a revoke and must not finish (its offsets are not ours to commit).
        self.assignment = 0
        self.checkpoint_bytes = CHECKPOINT_BYTES
        self.last_write = clock()
        self.on_sync: Callable[[float], None] | None = None  # each checkpoint's seconds
        self.on_forgotten: Callable[[list[str]], None] | None = None  # any thread may call it

    # -- set-up and names -----------------------------------------------------------------------

    def check_root(self) -> None:
        """Fails fast when the state root cannot be written; fits the descriptor cache."""
        try:
            made = not self.root.exists()
            self.root.mkdir(parents=True, exist_ok=True)
            if made and self.fsync:  # the root's own entry, before anything is committed in it
                self.syncer.sync_directory(self.root.parent)
            # Nameless where the OS allows (O_TMPFILE): it cannot collide with a session.
            with tempfile.TemporaryFile(dir=self.root) as probe:
                probe.write(b"probe")
                probe.flush()
        except OSError as exc:
            raise SinkError(
                f"ESCALATIONS_STATE_ROOT={str(self.root)!r} is not a writable directory: {exc}"
            ) from exc
        self.syncer.decide(self.max_open_files)  # for the root as it is now mounted

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
        return self.views.known_positions()

    def corrupt_sessions(self) -> dict[str, str]:
        """Sessions whose lines are being skipped until rebuilt, and why (a copy)."""
        return self.views.corrupt_sessions()

    def recorded(self, session_id: str) -> SinkPosition | None:
        """The session's recorded (checkpointed) position, as recovery would read it now (its
        position file merged with the position logs); None when nothing is recorded. Raises
        ``SinkCorruptionError`` for an unreadable position file."""
        directory = self.directory(session_id)
        with self.lock:
            self.logs.refresh()
            return self.logs.recorded(session_id, directory)

    def checkpoint_due(self) -> bool:
        """Enough bytes were written since the last checkpoint to take one now."""
        return self.unsynced_bytes >= self.checkpoint_bytes

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
                    self.views.skip(session_id, exc)
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
        partitions = None if partitions is None else list(partitions)
        with self.lock:
            self.assignment += 1  # a checkpoint begun before now must not finish
            if partitions is not None:
                self.fence.claim(partitions)  # before any of their sessions is read
            self.fds.clear()
            self.states.clear()
            self.dirty.clear()
            self._tails.clear()
            self.unsynced_bytes = 0
            self.views.healthy()
            self.logs.refresh()  # what every worker recorded, up to now
            known = {name for name, position in self.views.known.items() if position.size}
            if partitions is None:  # tools and tests: every directory under the root
                logged = set(self.sessions())
            else:  # what the assigned partitions' logs know: never a listing of the root
                logged = set().union(*(self.logs.sessions_of(p) for p in partitions))
            names = [n for n in sorted(logged | known) if owns(n)]
            # What this worker wrote is no measure of a file now (another owner may have cut
            # what was never recorded): the recorded positions are. Others' sessions go.
            self.views.unseen(set(names) | {n for n in self.views.known if not owns(n)})
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
        gone = [n for n in names if self.files.stat(self.root / n) is None]
        if gone:  # the sessions ended and their directories went
            log.warning("sink: forgetting %d sessions whose directories are gone", len(gone))
            self.forget_sessions(gone)
        for name in sorted(set(names).difference(gone)):
            try:
                state = self._state(name)
                self.locked(state, lambda s: None, wait=False)
            except LockBusy as exc:
                busy[name] = exc.path
                continue
            except SinkCorruptionError as exc:
                self.views.skip(name, exc)
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
                    self.views.skip(name, exc)
                self._tails.discard(name)
            self._tails.clear()
        return cut

    def release_idle(self, idle_s: float = IDLE_CLOSE_S) -> int:
        """Closes the cached descriptors (and mappings) once nothing was written for ``idle_s``
        and all is checkpointed: an idle worker keeps nothing open on the volume."""
        if not len(self.fds) or self.dirty or self.clock() - self.last_write < idle_s:
            return 0
        with self.lock:
            if self.dirty or self.checkpoints.active:
                return 0
            closed = len(self.fds)
            self.fds.clear()
            self.checkpoints.close()
            self.fence.release()
        return closed

    def wait_unlocked(self, busy: LockBusy) -> None:
        """Waits until the lock ``busy`` met is free, holding none of the sink's (a thread)."""
        self.sessions_io.wait_unlocked(busy.path)

    def close(self) -> None:
        """Closes every cached descriptor (tests; the worker's exit closes them anyway)."""
        with self.lock:
            self.fds.clear()
            self.checkpoints.close()
            self.fence.release()

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
        known = self.views.known.get(state.name)
        io = self.sessions_io
        try:
            io.acquire(state, 0 if known is None else known.size, wait=wait)
        except SinkCorruptionError:
            self.forget(state.name)
            raise
        try:
            if self.views.corrupt:
                self.views.healthy(state.name)
            result = work(state)
        finally:
            io.release(state)
        if known is not state.position:
            self.views.seen(state.name, state.position)
        return result or 0

    def _append(self, session_id: str, items: list[SinkLine], wait: bool = True) -> int:
        state = self._state(session_id)
        seen_at = state.position if state.loaded else None
        early = fresh_lines(seen_at, items) if seen_at is not None else []
        if seen_at is not None:
            if not early:
                return 0  # every line is at or below the offsets: nothing to lock or write
            if state.data_fd >= 0 and not state.tail and session_id not in self.views.corrupt:
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
        self.views.seen(state.name, state.position)
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

    def _fence(self, state: SessionState) -> None:
        self.fence.check(state.source)

    def forget_sessions(self, names: Iterable[str]) -> None:
        """Forgets ended sessions (lock held): state, views, log entries (by a tombstone)."""
        names = list(names)
        for name in names:
            self.forget(name)
            self.views.healthy(name)
        self.views.unseen(set(names))
        self.logs.forget(names, self.fence.owns)
        if names and self.on_forgotten is not None:
            self.on_forgotten(names)  # the sessions view's tombstones

    def forget(self, session_id: str) -> None:
        """Drops what is held of a session (its descriptors, its state), not what was seen."""
        state = self.states.pop(session_id, None)
        self.dirty.discard(session_id)
        self._tails.discard(session_id)
        if state is not None:
            self.fds.close_state(state)
