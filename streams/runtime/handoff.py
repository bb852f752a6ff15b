"""Entries the map stage produced, offered to the sink stage of the same worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from itertools import islice
from typing import Any, Final

from streams.core.records import SinkLine, sink_line

__all__ = ["Handoff"]

#: How long the map stage waits for room before it runs on regardless (the sink is not taking
#: entries: behind on older records, or between assignments), and how long it then runs free.
ROOM_WAIT_S: Final = 0.25
FREE_RUN_S: Final = 1.0


class Handoff:
    """Entries the map stage produced, offered to the sink stage of the same worker.

    Keyed by the output record's bytes, which are unique (an entry carries its bus event's
    topic, partition and offset) and decode to the entry they were encoded from: the sink
    takes an entry for a consumed record with the same bytes, so it skips decoding what this
    worker just encoded. Entries are offered *before* they are sent (the sink may fetch a
    record before the producer's acknowledgement is back); once acknowledged, those placed in
    partitions this worker's sink does not own are dropped (the map and sink groups assign
    partitions separately). Anything not found is decoded as usual. Bounded: the oldest
    entries go first.

    In a backlog the map stage runs ahead of the sink, and entries offered past the capacity
    evict ones the sink has not reached yet (which it then decodes again). So the map stage
    waits for room (:meth:`room`) while the sink is taking entries.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self.owned: set[int] | None = None  # the sink's output partitions (None: all)
        self._entries: dict[bytes, dict[str, Any]] = {}
        self._room: asyncio.Event | None = None
        self._free_until = 0.0
        self.hits = 0
        self.waits = 0  # times the map stage waited for room

    def __len__(self) -> int:
        return len(self._entries)

    def own(self, partitions: set[int]) -> None:
        """The sink's new assignment: what is held may belong to another worker now."""
        self.owned = set(partitions)
        self._entries.clear()
        self._wake()

    def offer(self, values: Sequence[bytes], entries: Sequence[dict[str, Any]]) -> None:
        """Before the send: each record's bytes and the entry they encode."""
        held = self._entries
        for value, entry in zip(values, entries, strict=True):
            held[value] = entry
        excess = len(held) - self.capacity
        if excess > 0:
            for key in list(islice(held, excess)):
                del held[key]

    def placed(self, placed: Sequence[tuple[int, int]], values: Sequence[bytes]) -> None:
        """After the acknowledgements: drop what went to partitions the sink does not own."""
        owned = self.owned
        if owned is None:
            return
        held = self._entries
        for (partition, _offset), value in zip(placed, values, strict=True):
            if partition not in owned:
                held.pop(value, None)

    async def room(self) -> None:
        """Waits (bounded) until the sink has taken enough entries for a batch more."""
        if len(self._entries) < self.capacity or time.monotonic() < self._free_until:
            return
        if self._room is None:
            self._room = asyncio.Event()
        self.waits += 1
        try:
            await asyncio.wait_for(self._room.wait(), ROOM_WAIT_S)
        except TimeoutError:
            self._free_until = time.monotonic() + FREE_RUN_S  # the sink is not taking any

    def take(self, value: bytes | None) -> SinkLine | None:
        """The line of a consumed record whose bytes were offered, or None (decode it)."""
        if value is None:
            return None
        found = self._entries.pop(value, None)
        if self._room is not None and len(self._entries) < self.capacity * 0.9:
            self._wake()
        if found is None:
            return None
        self.hits += 1
        return sink_line(found)

    def _wake(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None
