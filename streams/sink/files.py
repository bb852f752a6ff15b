"""The file sink: ``<state root>/<session id>/pending_escalations.jsonl``, exactly once.

Each state directory has a position file next to its JSONL file, updated *after* the lines
are appended and fsynced and *before* the consumer offset is committed. The position says
how many bytes of the file are good and, per source partition, the last bus-event offset
written. It has two page-aligned slots, written in turn in place (one ``pwrite`` and one
``fdatasync``, no rename): a torn slot fails its checksum and the other slot, one step
older, still holds. On first touch after a (re)assignment the sink truncates any torn tail
past the recorded size, and it skips every entry at or below the recorded offset, so
replays and repeats on the output topic write nothing twice.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from streams.core.records import SinkLine, session_id_problem
from streams.errors import SinkCorruptionError, SinkError
from streams.sink.position import (
    POSITION_NAME,
    SinkPosition,
    datasync,
    fsync_dir,
    read_position,
    stage_position,
    write_all,
    write_position,
)

log = logging.getLogger(__name__)

FILE_NAME: Final = "pending_escalations.jsonl"


@dataclass(frozen=True, slots=True)
class WriteResult:
    positions: dict[str, SinkPosition]  # new position of every session that got lines
    appended: int  # lines appended; the rest were at or below a recorded offset
    corrupt: dict[str, str] = field(default_factory=dict)  # sessions skipped, and why


@dataclass(slots=True)
class _Append:
    """A state directory's lines written in this round, not yet durable."""

    session_id: str
    directory: Path
    before: SinkPosition
    after: SinkPosition
    data_fd: int
    position_fd: int | None = None  # None: the position was recorded durably already


def _sync(fd: int | None) -> OSError | None:
    """Make a file's written data durable; the error instead of raising it."""
    if fd is None:
        return None
    try:
        datasync(fd)
    except OSError as exc:
        return exc
    return None


LOCK_NAME: Final = ".lock"
FSYNC_THREADS: Final = 8  # state directories written (and fsynced) at once


class FileSink:
    """Appends lines per state directory with fsync and durable positions.

    Every change to a state directory happens under an exclusive ``flock`` on its lock
    file and starts from the position on disk, so ``escalations sink rebuild`` (another
    process) can replace a file while the worker runs. A directory whose file is shorter
    than its recorded position is *corrupt*: its lines are skipped (they stay on the output
    topic, from which ``sink rebuild`` restores the file) and the other sessions go on.
    """

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root.resolve()
        #: False: lines and positions reach the page cache only (benchmarks, throwaway state):
        #: a killed process loses nothing, a power loss or kernel crash can.
        self.fsync = fsync
        self._positions: dict[str, SinkPosition] = {}
        self._corrupt: dict[str, str] = {}  # session -> why its lines are being skipped
        #: Guards the two dicts above for the moments they change or are copied: the event
        #: loop reads them (views, metrics) while a write round holds ``_lock`` in a thread.
        self._views = threading.Lock()
        self._lock = threading.Lock()
        self.syncs = 0  # durable appends (write + fsync + position) so far
        self.sync_seconds = 0.0  # wall time of the rounds that appended something
        self.on_sync: Callable[[float], None] | None = None  # each durable append's seconds
        self._executor: ThreadPoolExecutor | None = None

    def check_root(self) -> None:
        """Fail fast, with a clear error, when the state root cannot be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            # Nameless where the OS allows (O_TMPFILE): it cannot collide with a session.
            with tempfile.TemporaryFile(dir=self.root) as probe:
                probe.write(b"probe")
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as exc:
            raise SinkError(
                f"ESCALATIONS_STATE_ROOT={str(self.root)!r} is not a writable directory: {exc}"
            ) from exc

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
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and session_id_problem(p.name) is None
        )

    def recover(self, owns: Callable[[str], bool]) -> int:
        """Forget what is known of positions (after a rebalance another worker may have
        written), then recover (truncate torn tails of) every state directory we own.

        Called on partition assignment (in a thread: it does file I/O); returns how many
        directories were checked.
        """
        checked = 0
        with self._lock:
            with self._views:
                self._positions.clear()
                self._corrupt.clear()
            for name in self.sessions():
                if owns(name):
                    checked += 1
                    try:
                        with ExitStack() as held:
                            self._stage(held, name, [])
                    except SinkCorruptionError as exc:
                        self._skip(name, exc)
        return checked

    def position(self, session_id: str) -> SinkPosition:
        """The recorded position, recovering the directory (torn tail) first."""
        with self._lock:
            directory = self.directory(session_id)
            if not directory.is_dir():
                return SinkPosition()
            with _dir_lock(directory):
                return self._recover(directory)

    def known_positions(self) -> dict[str, SinkPosition]:
        """The last position this sink saw per session (for views and metrics)."""
        with self._views:
            return dict(self._positions)

    def corrupt_sessions(self) -> dict[str, str]:
        """Sessions whose lines are being skipped until rebuilt, and why (a copy)."""
        with self._views:
            return dict(self._corrupt)

    def write(self, lines: Iterable[SinkLine]) -> WriteResult:
        """Append each session's new lines, make them durable, then record the positions.

        One round per batch: every state directory's lines are written (one ``write`` each)
        under its ``flock``, then all of them are synced side by side, then every position
        slot is written and synced side by side; the locks are held until the round ends.
        Lines at or below a session's recorded source offset are skipped (already written).
        A corrupt session is skipped and reported; an I/O error in one session does not stop
        the others, and is raised once their round is complete.
        """
        by_session: dict[str, list[SinkLine]] = {}
        for item in lines:
            by_session.setdefault(item.session_id, []).append(item)
        written: dict[str, SinkPosition] = {}
        corrupt: dict[str, str] = {}
        failures: list[OSError] = []
        appended = 0
        started = time.perf_counter()
        with self._lock, ExitStack() as held:
            staged: list[_Append] = []
            # Locks are taken in one global order: two writers (say, a worker that has not yet
            # noticed it lost a partition, and its successor) can never wait for each other.
            for session_id, items in sorted(by_session.items()):
                try:
                    append = self._stage(held, session_id, items)
                except SinkCorruptionError as exc:
                    self._skip(session_id, exc)
                    corrupt[session_id] = str(exc)
                    continue
                except OSError as exc:
                    failures.append(exc)
                    continue
                self._healthy(session_id)
                if append is not None:
                    staged.append(append)
            durable = self._sync_all(staged, lambda a: a.data_fd, failures)
            recorded: list[_Append] = []
            for append in durable:
                try:
                    fd = stage_position(append.directory, append.after)
                except OSError as exc:
                    failures.append(exc)
                    continue
                if fd is not None:
                    held.callback(os.close, fd)
                append.position_fd = fd
                recorded.append(append)
            for append in self._sync_all(recorded, lambda a: a.position_fd, failures):
                self._seen(append.session_id, append.after)
                written[append.session_id] = append.after
                appended += append.after.entries - append.before.entries
            took = time.perf_counter() - started
        if written:
            self.syncs += len(written)
            self.sync_seconds += took
            if self.on_sync is not None:
                self.on_sync(took)
        if failures:
            raise failures[0]
        return WriteResult(written, appended, corrupt)

    def _skip(self, session_id: str, exc: SinkCorruptionError) -> None:
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
            self._positions[session_id] = position

    def _sync_all(
        self,
        appends: list[_Append],
        fd_of: Callable[[_Append], int | None],
        failures: list[OSError],
    ) -> list[_Append]:
        """Syncs the appends' files side by side; returns those that are durable."""
        fds = [fd_of(a) for a in appends]
        if not self.fsync:
            return appends
        if len(appends) > 1:
            errors = list(self._pool().map(_sync, fds))
        else:
            errors = [_sync(fd) for fd in fds]
        failures.extend(e for e in errors if e is not None)
        return [a for a, e in zip(appends, errors, strict=True) if e is None]

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="sink-fsync")
        return self._executor

    def replace(self, session_id: str, lines: list[SinkLine]) -> SinkPosition | None:
        """Rewrite a session's file from scratch with ``lines`` (``escalations sink rebuild``).

        ``lines`` must hold every entry of the session in output-topic order; repeats are
        dropped as the sink drops them. Atomic: readers see the old file or the new one.
        Returns None, changing nothing, when the recorded position is already past ``lines``
        (a worker wrote entries the caller has not read yet: read more and try again).
        """
        directory = self.directory(session_id)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock, _dir_lock(directory):
            fresh, position = _fresh(SinkPosition(), lines)
            try:
                recorded = read_position(directory / POSITION_NAME) or SinkPosition()
            except SinkCorruptionError:
                recorded = SinkPosition()
            position = dataclasses.replace(position, seq=recorded.seq + 1)
            if any(o > position.offsets.get(s, -1) for s, o in recorded.offsets.items()):
                return None
            payload = b"".join(item.line for item in fresh)
            tmp = directory / (FILE_NAME + ".rebuild")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                write_all(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            # Position first (a bigger size than the old file is never "torn"), then the file.
            write_position(directory, position)
            os.replace(tmp, directory / FILE_NAME)
            fsync_dir(directory)
            self._seen(session_id, position)
            self._healthy(session_id)
            return position

    # -- internals (called with self._lock held) -------------------------------------------

    def _stage(self, held: ExitStack, session_id: str, items: list[SinkLine]) -> _Append | None:
        """Lock and recover the directory, then write (not sync) its fresh lines, if any."""
        directory = self.directory(session_id)
        if not directory.is_dir():
            if not items:
                return None
            directory.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.root)
        held.enter_context(_dir_lock(directory))
        before = self._recover(directory)
        self._seen(session_id, before)
        fresh, after = _fresh(before, items)
        if not fresh:
            return None
        if before.size == 0 and not (directory / POSITION_NAME).exists():
            # Recorded before the first byte: a file without a position is never ours.
            write_position(directory, before)
        fd = os.open(directory / FILE_NAME, os.O_WRONLY | os.O_CREAT, 0o644)
        held.callback(os.close, fd)
        # At the recorded size: _recover cut whatever a failed earlier attempt left there.
        payload = memoryview(b"".join(item.line for item in fresh))
        at = before.size
        while payload:
            done = os.pwrite(fd, payload, at)
            payload, at = payload[done:], at + done
        return _Append(session_id, directory, before, after, fd)

    def _recover(self, directory: Path) -> SinkPosition:
        data = directory / FILE_NAME
        position = read_position(directory / POSITION_NAME)
        try:
            size = data.stat().st_size
        except FileNotFoundError:
            size = 0
        if position is None:
            if size:
                return self._adopt(directory, data)
            return SinkPosition()
        if size < position.size:
            raise SinkCorruptionError(
                f"{data} is {size} bytes but {position.size} were recorded as written: the file "
                "was truncated or deleted outside the sink; run `escalations sink rebuild "
                f"--session {directory.name}` to restore it from the output topic"
            )
        if size > position.size:
            log.warning(
                "%s: truncating %d bytes past the recorded position %d (torn or uncommitted tail)",
                data,
                size - position.size,
                position.size,
            )
            with open(data, "r+b") as f:
                f.truncate(position.size)
                os.fsync(f.fileno())
        return position

    def _adopt(self, directory: Path, data: Path) -> SinkPosition:
        """A file written by someone else (e.g. the original writer): keep its whole lines."""
        content = data.read_bytes()
        good = content.rfind(b"\n") + 1
        log.warning(
            "%s: adopting %d bytes written without a sink position (dropping a torn tail of %d)",
            data,
            good,
            len(content) - good,
        )
        if good < len(content):
            with open(data, "r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
        position = SinkPosition(size=good, entries=content.count(b"\n"))
        write_position(directory, position)
        return position


def _fresh(position: SinkPosition, items: list[SinkLine]) -> tuple[list[SinkLine], SinkPosition]:
    """The items past the recorded offsets, and the position after appending them."""
    offsets = dict(position.offsets)
    fresh: list[SinkLine] = []
    for item in items:
        if item.offset > offsets.get(item.source, -1):
            offsets[item.source] = item.offset
            fresh.append(item)
    if not fresh:
        return [], position
    return fresh, SinkPosition(
        size=position.size + sum(len(item.line) for item in fresh),
        entries=position.entries + len(fresh),
        offsets=offsets,
        last_ts_us=fresh[-1].ts_us,
        seq=position.seq + 1,
    )


@contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """An exclusive flock on the directory's lock file: one writer at a time, any process."""
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
