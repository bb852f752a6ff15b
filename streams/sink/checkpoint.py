"""The sink's checkpoint: every line written so far made durable, then the positions recorded.

One round:

0. ``begin`` takes the sessions written since the last checkpoint and a snapshot of each one's
   position (what is written so far) and of the source offsets handled so far (the caller's);
1. every file written before ``begin`` durable, with its new directory entries, the way chosen
   for the state root (:mod:`streams.sink.durability`): one ``syncfs(2)`` where the file system
   honours it, else an ``fdatasync`` of each file written (a pool of threads) and an ``fsync``
   of each directory whose entries changed;
2. the snapshot positions are appended to the position logs, a frame per output partition
   and slice of sessions (see :mod:`streams.sink.positionlog`): no state directory is touched;
3. each written log is ``fdatasync``-ed: the positions are durable (a log grown past its bound
   is then rewritten).

Only then does the source commit the offsets it had handled at ``begin``, so a committed
offset is always covered by a durable position, and a durable position by durable bytes.
Batches go on being written while a round runs (its syncs are long system calls in a thread):
their lines are past the snapshot, so the next round records them. With ``fsync`` off the
syncs are skipped. A failed sync is not retried (a retry can report success for pages that
were lost): the worker stops without committing, and the replay writes them again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from streams.errors import SinkError
from streams.sink.fdcache import Descriptors
from streams.sink.position import SinkPosition
from streams.sink.positionlog import PositionLogs
from streams.sink.state import SessionState
from streams.sink.syncer import Syncer

__all__ = ["CheckpointResult", "Checkpoints", "Round", "Sink"]

log = logging.getLogger(__name__)


class Sink(Protocol):
    """What a checkpoint needs of the file sink (``streams.sink.files.FileSink``)."""

    lock: threading.Lock
    states: dict[str, SessionState]
    dirty: set[str]
    clock: Callable[[], float]
    unsynced_bytes: int
    assignment: int
    logs: PositionLogs
    on_sync: Callable[[float], None] | None


@dataclass(slots=True)
class Round:
    """One checkpoint in progress."""

    states: list[SessionState]  # the sessions written since the last checkpoint
    #: Per session, its position at ``begin`` (what the first sync makes durable) and the
    #: generation of its files then.
    snapshots: dict[str, tuple[SinkPosition, int]]
    started: float
    oldest: float | None  # when the oldest of their lines was written
    unsynced_bytes: int  # bytes written before ``begin``
    assignment: int  # the sink's assignment when it began
    #: Per output partition (``topic:partition``), the positions phase 2 appends to its log.
    entries: dict[str, list[tuple[str, SinkPosition]]] = field(default_factory=dict)
    positions: dict[str, SinkPosition] = field(default_factory=dict)
    failures: list[OSError] = field(default_factory=list)
    recorded_up_to: int = 0  # how many of ``states`` phase 2 has been through


@dataclass(frozen=True, slots=True)
class CheckpointResult:
    positions: dict[str, SinkPosition]  # the position recorded (durably) per written session
    seconds: float  # how long the checkpoint took
    lag_seconds: float | None  # how long its oldest line waited to be durable (None: no lines)


class Checkpoints:
    """Runs the sink's checkpoints and counts them (for the log line and the benchmark)."""

    def __init__(self, sink: Sink, syncer: Syncer) -> None:
        self.sink = sink
        self.syncer = syncer
        self.count = 0  # checkpoints that recorded something
        self.seconds = 0.0
        self.log_syncs = 0  # fdatasync/fsync calls of the position logs
        self.recorded = 0  # positions recorded
        self.max_lag = 0.0
        self.lag_total = 0.0
        self.active = False  # a round is between begin and finish (or abort)

    def run(self) -> CheckpointResult:
        """A whole checkpoint in the calling thread."""
        rnd = self.begin()
        if rnd is None:
            return CheckpointResult({}, 0.0, None)
        try:
            if self.syncer.fsync:
                self.sync(rnd, data=True)
            self.record(rnd)
            if self.syncer.fsync and rnd.positions:
                self.sync(rnd, data=False)
        except BaseException:
            self.abort(rnd)
            raise
        return self.finish(rnd)

    # The phases, for a caller that runs the syncs in a thread and the rest inline (many
    # short system calls from a thread would each wait for the GIL).

    def begin(self) -> Round | None:
        """Takes the written sessions and their positions (None: nothing to checkpoint)."""
        sink = self.sink
        with sink.lock:
            states = [s for s in (sink.states.get(n) for n in sorted(sink.dirty)) if s is not None]
            sink.dirty.clear()
            if not states:
                return None
            self.active = True
            oldest = min((s.dirty_since for s in states if s.dirty_since is not None), default=None)
            snapshots = {s.name: (s.position, s.generation) for s in states}
            return Round(
                states, snapshots, sink.clock(), oldest, sink.unsynced_bytes, sink.assignment
            )

    def sync(self, rnd: Round, *, data: bool) -> None:
        """Phase 1 (``data``: one ``syncfs``; writes may go on meanwhile, what they add is past
        the snapshots) or 3 (the logs); a failure stops the worker (no retry)."""
        if data:
            self.syncer.sync(rnd.states)
            return
        try:
            self.log_syncs += self.sink.logs.sync()
        except OSError as exc:
            raise SinkError(f"cannot make the position logs durable: {exc}") from exc

    def record(self, rnd: Round, limit: int | None = None) -> bool:
        """Phase 2: the snapshot positions of at most ``limit`` more sessions, appended to
        their output partitions' logs (a frame per log; not synced); returns whether some are
        left (call again: the event loop runs between the calls). No directory lock is taken;
        a log's lock is held by other writers only for an append."""
        with self.sink.lock:
            if rnd.assignment != self.sink.assignment:
                return False  # outlived a revoke: records nothing (finish raises)
            self._record(rnd, limit)
            self._append(rnd)
        return rnd.recorded_up_to < len(rnd.states)

    def abort(self, rnd: Round) -> None:
        """The checkpoint failed: its sessions are recorded by the next one."""
        with self.sink.lock:
            self.active = False
            self.sink.dirty.update(s.name for s in rnd.states if s.dirty)

    def finish(self, rnd: Round) -> CheckpointResult:
        """Marks what was recorded durable; raises the first I/O error of phase 2 (then the
        caller retries, and commits nothing meanwhile)."""
        sink = self.sink
        with sink.lock:
            self.active = False
            if rnd.assignment != sink.assignment:
                raise SinkError(
                    "a checkpoint begun before the last rebalance outlived the revoke: "
                    "stopping without committing (the next owner replays what it covered)"
                )
            for state in rnd.states:
                position = rnd.positions.get(state.name)
                if position is not None:
                    state.recorded = position
                    if position.size >= state.position.size:
                        state.position = position
                        state.dirty_since = None
                    elif state.dirty_since is not None:
                        # Written again during the round: dirty since it began, at the latest.
                        state.dirty_since = max(state.dirty_since, rnd.started)
                elif state.dirty:
                    sink.dirty.add(state.name)  # not recorded (an I/O error): next time
            if not rnd.failures:
                sink.unsynced_bytes = max(0, sink.unsynced_bytes - rnd.unsynced_bytes)
                for name in sink.logs.compact_due():
                    sink.logs.compact(name)  # rare: when a log grew 4x
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

    def _record(self, rnd: Round, limit: int | None) -> None:
        """Takes the snapshot positions to record, from where the last call stopped."""
        sink = self.sink
        end = len(rnd.states) if limit is None else min(len(rnd.states), rnd.recorded_up_to + limit)
        while rnd.recorded_up_to < end:
            state = rnd.states[rnd.recorded_up_to]
            rnd.recorded_up_to += 1
            snapshot, generation = rnd.snapshots[state.name]
            if not state.dirty or state.generation != generation:
                continue  # reloaded from a replacement: nothing of ours to record
            if sink.states.get(state.name) is not state:
                continue  # forgotten (corrupt, or replaced by a rebuild)
            recorded = state.recorded
            if recorded.epoch == snapshot.epoch and recorded.size >= snapshot.size:
                rnd.positions[state.name] = recorded  # another writer recorded past it
                continue
            position = snapshot
            if snapshot.seq <= recorded.seq:  # written before the last record: number it anew
                position = SinkPosition(
                    snapshot.size,
                    snapshot.entries,
                    snapshot.offsets,
                    snapshot.last_ts_us,
                    recorded.seq + 1,
                    epoch=snapshot.epoch,
                )
            rnd.entries.setdefault(state.source, []).append((state.name, position))

    def _append(self, rnd: Round) -> None:
        """Appends the taken positions, a frame per output partition's log."""
        logs = self.sink.logs
        for source in sorted(rnd.entries):
            entries = rnd.entries[source]
            try:
                logs.append(source, entries)
            except OSError as exc:
                rnd.failures.append(exc)
                continue
            for name, position in entries:
                rnd.positions[name] = position
        rnd.entries.clear()

    def summary(self, fds: Descriptors) -> str:
        mean = self.lag_total / self.count if self.count else 0.0
        return (
            f"checkpoints {self.count} in {self.seconds:.3f}s, sync calls {self.sync_calls}, "
            f"positions recorded {self.recorded}, durability lag max {1000 * self.max_lag:.0f} ms "
            f"mean {1000 * mean:.0f} ms, open files peak {fds.peak} of {fds.capacity} "
            f"(opened {fds.opened})"
        )

    @property
    def sync_calls(self) -> int:
        """Sync system calls so far: the data's and the logs'."""
        return self.syncer.calls + self.log_syncs

    def close(self) -> None:
        self.syncer.close()
        self.sink.logs.close()
