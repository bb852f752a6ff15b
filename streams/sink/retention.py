"""Forgetting sessions: a worker's memory and position logs bounded by its live sessions.

Agent sessions are short-lived: their state directories are archived or deleted when they end.
A session whose directory is gone, or that got no line for longer than the retention
(``ESCALATIONS_SESSION_RETENTION``, by this worker's clock: an event's own time may be old, as
in a backfill), is *forgotten*: its state, descriptors and views leave the
worker, and a tombstone in its partition's position log drops it from every reader's fold and
from the log's next rewrite (:mod:`streams.sink.positionlog`). Only the partitions this worker
owns get tombstones; another worker's sessions merely leave this one's memory. A session with
lines not yet checkpointed is never forgotten.

A forgotten session that comes back is a new one: a directory that is gone is created anew
holding only its new lines; a file that is still there is adopted (its whole lines kept, the
new ones after them). Recovery forgets the sessions whose directories went while no worker ran.

The sweep goes through the sessions the worker knows a slice at a time (one ``stat`` each), on
the event loop after a checkpoint: a round in eight checkpoints (through 20,000 sessions, about
4 ms a checkpoint).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from streams.sink.files import FileSink

__all__ = ["SWEEP_SLICE", "SWEEP_SLICE_MAX", "Retention"]

log = logging.getLogger(__name__)

#: Sessions checked per call of :meth:`Retention.sweep`: an eighth of those known (a round in
#: eight checkpoints), at least ``SWEEP_SLICE`` and at most ``SWEEP_SLICE_MAX`` (~30 ms).
SWEEP_SLICE: Final = 1024
SWEEP_SLICE_MAX: Final = 8192


class Retention:
    """Finds the sessions to forget, a slice per call, and has the sink forget them."""

    def __init__(
        self, sink: FileSink, retention_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.sink = sink
        self.retention_s = retention_s
        self.clock = clock
        self.forgotten = 0  # sessions forgotten so far
        self._round: list[str] = []  # the sessions the current round has still to check
        self._slice = SWEEP_SLICE
        #: Per session, the size of its file when a round last saw it change, and when.
        self._changed: dict[str, tuple[int, float]] = {}

    def sweep(self, limit: int | None = None) -> list[str]:
        """Checks the next ``limit`` sessions of the round (a new round, over every session
        the worker knows, once the last ended); forgets and returns those that ended."""
        sink = self.sink
        if not self._round:
            self._round = sorted(sink.known_positions(), reverse=True)
            self._slice = min(SWEEP_SLICE_MAX, max(SWEEP_SLICE, len(self._round) // 8))
        limit = limit or self._slice
        batch, self._round = self._round[-limit:], self._round[:-limit]
        now = self.clock()
        changed = self._changed
        ended: list[str] = []
        with sink.lock:
            for name in batch:
                state = sink.states.get(name)
                known = sink.views.known.get(name)
                if known is None:
                    changed.pop(name, None)  # forgotten meanwhile
                    continue
                if name in sink.dirty or (state is not None and state.dirty):
                    continue  # lines not yet recorded
                size, since = changed.get(name, (-1, now))
                if size != known.size:
                    changed[name] = (known.size, since := now)
                gone = sink.files.stat(f"{sink.root}/{name}") is None
                if gone or now - since > self.retention_s:
                    ended.append(name)
                    changed.pop(name, None)
            if ended:
                sink.forget_sessions(ended)
        if ended:
            self.forgotten += len(ended)
            log.info(
                "sink: forgot %d sessions (their directories gone, or idle past the retention "
                "of %.0f s); %d forgotten so far",
                len(ended),
                self.retention_s,
                self.forgotten,
            )
        return ended
