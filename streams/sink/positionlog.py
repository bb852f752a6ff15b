"""The position logs: the sink's recorded positions, one append-only log per output partition.

``<state root>/.positions/<topic>-<partition>.log`` holds frames (magic, length, CRC-32, then a
JSON list of ``[session, epoch, size, entries, last_ts_us, seq, offsets]``); the first names the
file (a random identity, new at each rewrite: inode numbers are reused at once). A checkpoint
appends a frame per partition under the log's ``flock``. Only a torn *tail* is ever cut (never
synced: nothing was committed on it); an intact frame this version cannot read, or a damaged
one with intact frames after it, stops the worker. A log past :data:`COMPACT_BYTES` is
rewritten as its newest entries (temporary file, synced, renamed, under the lock of the file
at the path). A *tombstone* (an entry of size -1) forgets a session (``streams.sink.retention``):
the fold drops it, and the next rewrite leaves it out.

A session's recorded position is its position file's (``sink rebuild``, adopted files) merged
with the logs' entries of the same *epoch*: 0 for a file the sink created, a fresh random
number for each file ``sink rebuild`` wrote, so entries about a replaced file never apply to
its successor. Entries of one epoch describe prefixes of one file, so they merge: the biggest
size, and per source partition the highest offset.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from streams.core.records import POSITIONS_DIR_NAME
from streams.errors import SinkError
from streams.sink.fileio import OS_FILES, FileLayer, write_all
from streams.sink.frames import FrameError, encode_frame, header, log_id, parse_frames
from streams.sink.position import POSITION_NAME, SinkPosition, read_position

__all__ = [
    "COMPACT_BYTES",
    "LOG_DIR",
    "PositionLogs",
    "log_name",
    "merge",
    "new_epoch",
    "read_recorded",
    "tombstone",
]

#: The logs' directory under the state root (a reserved name: never a session id).
LOG_DIR: Final = POSITIONS_DIR_NAME
LOG_SUFFIX: Final = ".log"
#: A log past this size is rewritten as its newest entries (when it is also 4x its last
#: rewrite: a log of many sessions is not rewritten at every checkpoint). Small enough that a
#: log stays a few times the size of its live sessions' entries however many have ended.
COMPACT_BYTES: Final = 2 * 1024 * 1024


def log_name(source: str) -> str:
    """The log file of an output partition (``topic:partition`` -> ``topic-partition.log``)."""
    topic, _, partition = source.rpartition(":")
    return f"{topic}-{partition}{LOG_SUFFIX}"


def new_epoch() -> int:
    """A fresh, nonzero epoch for a file written anew (``sink rebuild``)."""
    return secrets.randbits(62) | 1


def merge(a: SinkPosition, b: SinkPosition) -> SinkPosition:
    """Two recorded positions of one epoch as one: the bigger prefix, the highest offsets."""
    big, small = (a, b) if (a.size, a.seq) >= (b.size, b.seq) else (b, a)
    if big.seq >= small.seq:
        known = big.offsets
        for source, offset in small.offsets.items():
            if offset > known.get(source, -1):
                break
        else:
            return big  # the usual case: a newer record of the same writer
    offsets = dict(small.offsets)
    for source, offset in big.offsets.items():
        if offset > offsets.get(source, -1):
            offsets[source] = offset
    if offsets == big.offsets and big.seq >= small.seq:
        return big
    return SinkPosition(
        big.size, big.entries, offsets, big.last_ts_us, max(a.seq, b.seq), epoch=big.epoch
    )


@dataclass(slots=True)
class _Log:
    path: Path
    #: Which file was read: its (st_dev, st_ino) and the identity in its first frame (inode
    #: numbers are reused at once: a rewrite's file may get the number of the one it replaced).
    identity: tuple[tuple[int, int], int | None] | None = None
    end: int = 0  # bytes read (whole frames) so far
    fd: int = -1  # open for appending (this worker wrote to it)
    unsynced: bool = False  # appended to since the last sync
    compacted: int = 0  # size after the last rewrite
    source: str = ""  # its output partition (``topic:partition``), once this worker wrote it
    sessions: set[str] = field(default_factory=set)  # the sessions it holds entries of


class PositionLogs:
    """Every position log under a state root, read incrementally and folded per session;
    appends and rewrites for the checkpoints of the sink that owns it (not thread-safe: the
    sink's lock serialises its callers)."""

    def __init__(self, files: FileLayer, root: Path, *, fsync: bool = True) -> None:
        self.files = files
        self.dir = root / LOG_DIR
        self.fsync = fsync
        self._logs: dict[str, _Log] = {}
        #: Per session: its newest entries read or written, merged (one epoch: the latest).
        self._fold: dict[str, SinkPosition] = {}
        #: Directories whose entries changed (a new log, or the logs' directory): synced by
        #: :meth:`sync`.
        self.created: set[Path] = set()
        self.compact_bytes = COMPACT_BYTES
        #: Raises when the log's partition was assigned to another worker (checked with the
        #: log's lock held: see :mod:`streams.sink.fence`).
        self.fence: Callable[[str], None] = lambda source: None
        self.frames = 0  # frames appended
        self.forgotten = 0  # sessions forgotten (tombstoned, or left to their owner's log)
        self.compactions = 0

    # -- reading --------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Reads what was appended to every log since the last call (a rewritten log whole)."""
        files = self.files
        try:
            names = files.list_files(self.dir)
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in sorted(names):
            if name.endswith(LOG_SUFFIX):
                self._catch_up(self._log(name))

    def get(self, session: str, epoch: int) -> SinkPosition | None:
        """The session's newest logged position of that epoch, or None."""
        found = self._fold.get(session)
        if found is None or found.epoch != epoch:
            return None
        return found

    def sessions_of(self, source: str) -> set[str]:
        """The sessions the output partition's log holds entries of (as last read)."""
        log = self._logs.get(log_name(source))
        return set() if log is None else set(log.sessions)

    def latest(self, session: str) -> SinkPosition | None:
        """The session's newest logged position, of any epoch (None: no log holds it)."""
        return self._fold.get(session)

    def recorded(self, session: str, directory: Path) -> SinkPosition | None:
        """The session's recorded position: its position file's, merged with the logs' entries
        of the same epoch (None: nothing recorded). Call :meth:`refresh` first."""
        own = read_position(directory / POSITION_NAME, self.files)
        return self.effective(session, own)

    def effective(self, session: str, own: SinkPosition | None) -> SinkPosition | None:
        """``own`` (a position file's record, or None) merged with the logs' entries."""
        logged = self.get(session, 0 if own is None else own.epoch)
        if logged is None:
            return own
        return logged if own is None else merge(own, logged)

    def _log(self, name: str) -> _Log:
        log = self._logs.get(name)
        if log is None:
            log = _Log(self.dir / name)
            self._logs[name] = log
        return log

    def _catch_up(self, log: _Log, fd: int | None = None) -> int:
        """Reads the log's new whole frames (from the start when it was rewritten); returns
        where its whole frames end. ``fd``: the log, open (and locked) by the caller."""
        files = self.files
        own = fd is None
        if own:
            try:
                fd = files.open(log.path, readonly=True)
            except FileNotFoundError:
                return 0
        assert fd is not None
        try:
            st = files.fstat(fd)
            identity = (st.identity, log_id(files, fd))
            before: set[str] = set()
            if identity != log.identity:  # new, or rewritten: read it whole
                log.identity, log.end = identity, 0
                log.compacted = st.size
                before, log.sessions = log.sessions, set()
            if st.size > log.end:
                raw = files.pread(fd, st.size - log.end, log.end)
                try:
                    entries, good = parse_frames(raw)
                except FrameError as exc:
                    raise SinkError(
                        f"{log.path}: the frame at byte {log.end + exc.offset} {exc.reason}: "
                        "stopping rather than cutting it (a newer version's log during an "
                        "upgrade: finish the upgrade; a damaged log: restore it from a backup)"
                    ) from exc
                self._apply(entries, log)
                log.end += good
            if before:  # sessions the rewrite dropped (forgotten) leave the fold too
                self._drop(before - log.sessions)
        finally:
            if own:
                files.close(fd)
        return log.end

    def _apply(self, entries: Iterable[tuple[str, SinkPosition]], log: _Log) -> None:
        """Folds entries read from (or appended to) ``log``, in its order. Entries of one
        epoch merge. Of two epochs the higher ``seq`` wins, and on a tie the later entry: a
        rebuild counts on from every record it saw, and the worker from the rebuild's."""
        fold = self._fold
        held = log.sessions
        for name, position in entries:
            if not name:
                continue  # the log's identity (its first frame)
            if position.size < 0:  # a tombstone: the session was forgotten
                held.discard(name)
                fold.pop(name, None)
                continue
            held.add(name)
            old = fold.get(name)
            if old is None:
                fold[name] = position
            elif old.epoch == position.epoch:
                fold[name] = merge(old, position)
            elif position.seq >= old.seq:
                fold[name] = position

    def forget(self, names: Iterable[str], writable: Callable[[str], bool]) -> None:
        """Forgets sessions: a tombstone in each log holding one whose partition is
        ``writable`` (this worker's), else only out of this worker's memory."""
        names = set(names)
        self.forgotten += len(names)
        for log in list(self._logs.values()):
            held = sorted(names & log.sessions)
            topic, _, partition = log.path.name.removesuffix(LOG_SUFFIX).rpartition("-")
            source = f"{topic}:{partition}"
            if held and writable(source):
                self.append(source, [(n, tombstone(self._fold.get(n))) for n in held])
            log.sessions.difference_update(held)
        for name in names:
            self._fold.pop(name, None)

    def _drop(self, names: set[str]) -> None:
        """Forgets ``names`` where no other log holds them."""
        for name in names:
            if not any(name in log.sessions for log in self._logs.values()):
                self._fold.pop(name, None)

    # -- writing (the checkpoint) ---------------------------------------------------------------

    def append(self, source: str, entries: list[tuple[str, SinkPosition]]) -> None:
        """Appends one frame to the source partition's log, under its lock (not synced: see
        :meth:`sync`); first reads what another writer appended, and cuts a torn frame."""
        files = self.files
        log = self._log(log_name(source))
        log.source = source
        fd = self._lock_current(log)
        try:
            self.fence(source)
            end = self._catch_up(log, fd)
            size = files.fstat(fd).size
            if end > size:  # never: a frame past the end would leave a hole no reader crosses
                raise SinkError(f"{log.path} is {size} bytes, shorter than read ({end})")
            if size > end:
                files.truncate(fd, end)  # a torn tail: never synced, nothing committed on it
            frame = encode_frame(entries)
            if end == 0:  # a new log: its identity first
                log_id = new_epoch()
                frame = header(log_id) + frame
                log.identity = (files.fstat(fd).identity, log_id)
            write_all(files, fd, frame, end)
            log.end = end + len(frame)
            log.unsynced = True
            self._apply(entries, log)
            self.frames += 1
        finally:
            files.unlock(fd)

    def sync(self) -> int:
        """Makes the appended frames durable (``fdatasync`` of each log appended to since the
        last call, and the directories of new logs); returns how many syncs that took."""
        calls = 0
        for log in list(self._logs.values()):  # the event loop may read a new log meanwhile
            if log.unsynced and log.fd >= 0:
                self.files.datasync(log.fd)
                log.unsynced = False
                calls += 1
        for directory in sorted(self.created):
            self._sync_dir(directory)
            calls += 1
        self.created.clear()
        return calls

    def compact_due(self) -> list[str]:
        """The logs this sink writes that grew enough to be rewritten."""
        return [
            name
            for name, log in self._logs.items()
            if log.fd >= 0 and log.end > max(self.compact_bytes, 4 * log.compacted)
        ]

    def compact(self, name: str) -> None:
        """Rewrites a log as one frame of its newest entries: written and synced under a
        temporary name, renamed over the log under its lock, the directory synced."""
        files = self.files
        log = self._logs[name]
        fd = self._lock_current(log)  # never a rewrite of a file another writer replaced
        log_id = new_epoch()
        try:
            self.fence(log.source)
            self._catch_up(log, fd)
            fold = self._fold
            log.sessions.intersection_update(fold)  # forgotten (a tombstone) elsewhere
            frame = header(log_id) + encode_frame((s, fold[s]) for s in sorted(log.sessions))
            tmp = self.dir / (name + ".tmp")
            tmp_fd = files.open(tmp, create=True)
            try:
                files.truncate(tmp_fd, 0)
                write_all(files, tmp_fd, frame, 0)
                if self.fsync:
                    files.datasync(tmp_fd)
            finally:
                files.close(tmp_fd)
            files.replace(tmp, log.path)
            if self.fsync:
                self._sync_dir(self.dir)
        finally:
            files.unlock(fd)
        files.close(fd)
        log.fd = -1
        st = files.stat(log.path)
        log.identity = None if st is None else (st.identity, log_id)
        log.end = log.compacted = len(frame)
        self.compactions += 1

    def _lock_current(self, log: _Log) -> int:
        """The log's descriptor, locked, naming the file now at its path (a descriptor of a
        file another writer replaced is closed and the new file opened). An open file's inode
        number is not reused while it is open, so the comparison holds."""
        files = self.files
        for _ in range(8):
            fd = self._open(log)
            files.lock(fd)
            st = files.stat(log.path)
            if st is not None and st.identity == files.fstat(fd).identity:
                return fd
            files.unlock(fd)
            files.close(fd)  # rewritten by another writer: the new file
            log.fd = -1
        raise SinkError(f"{log.path} keeps being replaced while this worker appends to it")

    def _open(self, log: _Log) -> int:
        if log.fd < 0:
            files = self.files
            if files.stat(self.dir) is None:
                files.mkdir(self.dir)
                self.created.add(self.dir.parent)
            try:
                log.fd = files.open(log.path)
            except FileNotFoundError:
                log.fd = files.open(log.path, create=True)
                self.created.add(self.dir)
        return log.fd

    def _sync_dir(self, directory: Path) -> None:
        fd = self.files.open_dir(directory)
        try:
            self.files.fsync(fd)
        finally:
            self.files.close(fd)

    def close(self) -> None:
        """Closes the logs' descriptors (what was read stays known)."""
        for log in self._logs.values():
            if log.fd >= 0:
                self.files.close(log.fd)
                log.fd = -1


def tombstone(last: SinkPosition | None) -> SinkPosition:
    """The entry that forgets a session: size -1 (read by earlier versions as an older record
    of the same epoch, which their merge ignores)."""
    return SinkPosition(
        -1, 0, {}, None, 0 if last is None else last.seq, epoch=last.epoch if last else 0
    )


def read_recorded(root: Path, session: str, files: FileLayer = OS_FILES) -> SinkPosition | None:
    """A session's recorded position under a state root, as recovery reads it (tools, tests)."""
    logs = PositionLogs(files, root)
    logs.refresh()
    return logs.recorded(session, root / session)
