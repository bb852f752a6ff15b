"""The sink's checkpoint: every line written so far made durable, then the positions recorded.

One round, with the sink's lock held (writes wait for it):

1. one ``syncfs(2)`` on the state root's file system: the data of every file written since the
   last checkpoint is durable (with new directories and position files); where ``syncfs`` is
   missing, each written file is ``fdatasync``-ed and each new directory entry ``fsync``-ed;
2. each written directory's position is written in place (one ``pwrite`` of a slot, under the
   directory's lock, after checking the file is still the one written);
3. one more ``syncfs``: the positions are durable.

Only then does the source commit the sink group's offsets, so a committed offset is always
covered by a durable position, and a durable position by durable bytes. With ``fsync`` off the
two syncs are skipped. A failed sync is not retried (a retry can report success for pages
that were lost): the worker stops without committing, and the replay writes them again.
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from streams.errors import SinkCorruptionError, SinkError
from streams.sink.fdcache import Descriptors
from streams.sink.position import SinkPosition
from streams.sink.state import SessionState

if TYPE_CHECKING:
    from streams.sink.files import FileSink

__all__ = ["CheckpointResult", "Checkpoints", "Round"]

#: syncfs errors that mean "not available here", not "the data did not make it".
_NO_SYNCFS: Final = frozenset({errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})


@dataclass(slots=True)
class Round:
    """One checkpoint in progress."""

    states: list[SessionState]  # the sessions written since the last checkpoint
    started: float
    oldest: float | None  # when the oldest of their lines was written
    positions: dict[str, SinkPosition] = field(default_factory=dict)
    failures: list[OSError] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CheckpointResult:
    positions: dict[str, SinkPosition]  # the position recorded (durably) per written session
    seconds: float  # how long the checkpoint took
    lag_seconds: float | None  # how long its oldest line waited to be durable (None: no lines)


class Checkpoints:
    """Runs the sink's checkpoints and counts them (for the log line and the benchmark)."""

    def __init__(self, sink: FileSink) -> None:
        self.sink = sink
        self.count = 0  # checkpoints that recorded something
        self.seconds = 0.0
        self.sync_calls = 0  # syncfs, or fdatasync/fsync where syncfs is missing
        self.recorded = 0  # positions recorded
        self.max_lag = 0.0
        self.lag_total = 0.0
        self._root_fd: int | None = None
        self._syncfs = True

    def run(self) -> CheckpointResult:
        """A whole checkpoint in the calling thread."""
        rnd = self.begin()
        if rnd is None:
            return CheckpointResult({}, 0.0, None)
        try:
            if self.sink.fsync:
                self.sync(rnd, data=True)
            self.record(rnd)
            if self.sink.fsync and rnd.positions:
                self.sync(rnd, data=False)
        except BaseException:
            self.abort(rnd)
            raise
        return self.finish(rnd)

    # The phases, for a caller that runs the syncs in a thread and the rest inline (many
    # short system calls from a thread would each wait for the GIL).

    def begin(self) -> Round | None:
        """Takes the written sessions (None: nothing to checkpoint)."""
        sink = self.sink
        with sink.lock:
            states = [s for s in (sink.states.get(n) for n in sorted(sink.dirty)) if s is not None]
            sink.dirty.clear()
            if not states:
                return None
            oldest = min((s.dirty_since for s in states if s.dirty_since is not None), default=None)
            return Round(states, sink.clock(), oldest)

    def sync(self, rnd: Round, *, data: bool) -> None:
        """Phase 1 (``data``) or 3: one ``syncfs``; a failure stops the worker (no retry)."""
        with self.sink.lock:
            states = rnd.states if data else [s for s in rnd.states if s.name in rnd.positions]
            self._sync(states, data=data)

    def record(self, rnd: Round, *, wait: bool = True) -> None:
        """Phase 2: each written directory's position slot, under its lock (not synced);
        ``LockBusy`` when ``wait`` is False and a lock is held elsewhere (then call again)."""
        with self.sink.lock:
            rnd.positions, rnd.failures = self._record(rnd.states, wait)

    def abort(self, rnd: Round) -> None:
        """The checkpoint failed: its sessions are written again by the next one."""
        with self.sink.lock:
            self.sink.dirty.update(s.name for s in rnd.states if s.dirty)

    def finish(self, rnd: Round) -> CheckpointResult:
        """Marks what was recorded durable; raises the first I/O error of phase 2 (then the
        caller retries, and commits nothing meanwhile)."""
        sink = self.sink
        with sink.lock:
            for state in rnd.states:
                position = rnd.positions.get(state.name)
                if position is not None:
                    state.recorded = position
                    if position.size >= state.position.size:
                        state.position = position
                    state.dirty_since = None
                elif state.dirty:
                    sink.dirty.add(state.name)  # not recorded (an I/O error): next time
            if not sink.dirty:
                sink.unsynced_bytes = 0
            took = sink.clock() - rnd.started
            lag = None if rnd.oldest is None else sink.clock() - rnd.oldest
            if rnd.positions:
                self.count += 1
                self.seconds += took
                self.recorded += len(rnd.positions)
                if lag is not None:
                    self.max_lag = max(self.max_lag, lag)
                    self.lag_total += lag
        if rnd.failures:
            raise rnd.failures[0]
        if rnd.positions and sink.on_sync is not None:
            sink.on_sync(took)
        return CheckpointResult(rnd.positions, took, lag)

    def _record(
        self, states: list[SessionState], wait: bool = True
    ) -> tuple[dict[str, SinkPosition], list[OSError]]:
        """Writes each written directory's position slot under its lock (not synced)."""
        sink = self.sink
        positions: dict[str, SinkPosition] = {}
        failures: list[OSError] = []

        def record(state: SessionState) -> int:
            if not state.dirty:
                return 0  # reloaded from a replacement: nothing of ours to record
            position = dataclasses.replace(state.position, seq=state.recorded.seq + 1)
            positions[state.name] = sink.sessions_io.record(state, position)
            return 1

        for state in states:
            if not state.dirty:
                continue
            try:
                sink.locked(state, record, wait=wait)
            except SinkCorruptionError as exc:
                sink.skip(state.name, exc)
            except OSError as exc:
                failures.append(exc)
        return positions, failures

    def _sync(self, states: Iterable[SessionState], *, data: bool) -> None:
        """Everything written so far durable (by ``syncfs``, else the states' data or position
        files and the new directory entries); a failure stops the worker (no retry)."""
        sink = self.sink
        self.sync_calls += 1
        try:
            if self._syncfs:
                try:
                    if self._root_fd is None:
                        self._root_fd = sink.files.open_dir(sink.root)
                    sink.files.syncfs(self._root_fd)
                    sink.sessions_io.created.clear()
                    return
                except OSError as exc:
                    if exc.errno not in _NO_SYNCFS:
                        raise
                    self._syncfs = False
            for state in states:
                self.sync_calls += sink.sessions_io.sync(state, data=data)
            for directory in sorted(sink.sessions_io.created):
                fd = sink.files.open_dir(directory)
                try:
                    sink.files.fsync(fd)
                finally:
                    sink.files.close(fd)
                self.sync_calls += 1
            sink.sessions_io.created.clear()
        except OSError as exc:
            raise SinkError(f"cannot make the files under {sink.root} durable: {exc}") from exc

    def summary(self, fds: Descriptors) -> str:
        mean = self.lag_total / self.count if self.count else 0.0
        return (
            f"checkpoints {self.count} in {self.seconds:.3f}s, sync calls {self.sync_calls}, "
            f"positions recorded {self.recorded}, durability lag max {1000 * self.max_lag:.0f} ms "
            f"mean {1000 * mean:.0f} ms, open files peak {fds.peak} of {fds.capacity} "
            f"(opened {fds.opened})"
        )

    def close(self) -> None:
        if self._root_fd is not None:
            self.sink.files.close(self._root_fd)
            self._root_fd = None
