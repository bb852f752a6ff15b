"""Open descriptors of the state directories, kept for reuse: at most ``capacity`` of them,
the least recently used session's closed first (``ESCALATIONS_MAX_OPEN_FILES``)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from streams.sink.fileio import FileLayer
from streams.sink.state import SessionState

__all__ = ["MIN_CAPACITY", "Descriptors"]

#: The fewest descriptors the cache accepts: one session's data file, and two to spare.
MIN_CAPACITY: Final = 3


class Descriptors:
    """An LRU of sessions holding an open descriptor (``data_fd``).

    A pinned session (its directory lock held) is never closed to make room; everything else
    may be, and is reopened on its next use.
    """

    def __init__(self, files: FileLayer, capacity: int) -> None:
        if capacity < MIN_CAPACITY:
            raise ValueError(f"at least {MIN_CAPACITY} descriptors are needed, not {capacity}")
        self.files = files
        self.capacity = capacity
        self._holders: OrderedDict[str, SessionState] = OrderedDict()
        self.pinned: SessionState | None = None
        #: Called with the states whose descriptors are about to be closed (the sink syncs
        #: them first where files are synced one by one).
        self.before_close: Callable[[list[SessionState]], None] | None = None
        #: How many descriptors a full cache closes at once (more than one where each close
        #: costs a sync: they are synced together).
        self.evict_batch = 1
        self.open_now = 0
        self.peak = 0  # most descriptors open at once
        self.opened = 0  # descriptors opened so far (misses of the cache)

    def __len__(self) -> int:
        return self.open_now

    def touch(self, state: SessionState) -> None:
        """``state`` was used: the last to be closed."""
        if state.name in self._holders:
            self._holders.move_to_end(state.name)

    def reserve(self) -> None:
        """Room for one more descriptor (call before opening it)."""
        if self.open_now >= self.capacity:
            self._make_room(self.capacity - min(self.evict_batch, self.capacity - 1))

    def opened_one(self, state: SessionState) -> None:
        """``state`` has just opened one more descriptor (call after storing it)."""
        self.opened += 1
        self.open_now += 1
        self._holders[state.name] = state
        self._holders.move_to_end(state.name)
        self.peak = max(self.peak, self.open_now)

    def close_state(self, state: SessionState) -> None:
        """Closes every descriptor ``state`` holds."""
        self._close([state])

    def clear(self) -> None:
        self._close(list(self._holders.values()))
        self.pinned = None

    def _make_room(self, target: int) -> None:
        victims: list[SessionState] = []
        for state in self._holders.values():  # oldest first
            if self.open_now - len(victims) <= target:
                break
            if state is not self.pinned:
                victims.append(state)
        # Too few when only the pinned session is left: go over rather than unlock it.
        self._close(victims)

    def _close(self, states: list[SessionState]) -> None:
        states = [s for s in states if s.data_fd >= 0]
        if states and self.before_close is not None:
            self.before_close(states)
        for state in states:
            self._holders.pop(state.name, None)
            fd, state.data_fd = state.data_fd, -1
            self.open_now -= 1
            self.files.close(fd)
