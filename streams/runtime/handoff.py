"""Entries the map stage produced, offered to the sink stage of the same worker."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from typing import Any

from streams.core.records import SinkLine, sink_line

__all__ = ["Handoff"]


class Handoff:
    """Entries the map stage produced, offered to the sink stage of the same worker.

    Keyed by the output record's (partition, offset) from the produce acknowledgement, with the
    record's bytes: the sink takes an entry only for a consumed record with the same offset
    *and* the same bytes, so it skips decoding what this worker just encoded. Only partitions
    this worker's sink owns are kept (the map and sink groups assign partitions separately);
    anything else (another worker's record, one consumed before its acknowledgement came back,
    one evicted) is decoded as usual. Bounded: the oldest entries go first.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self.owned: set[int] | None = None  # the sink's output partitions (None: all)
        self._entries: dict[tuple[int, int], tuple[bytes, dict[str, Any]]] = {}
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def own(self, partitions: set[int]) -> None:
        """The sink's new assignment: entries of other partitions will not be taken."""
        self.owned = set(partitions)
        for key in [k for k in self._entries if k[0] not in self.owned]:
            del self._entries[key]

    def put(
        self,
        placed: Sequence[tuple[int, int]],
        values: Sequence[bytes],
        entries: Sequence[dict[str, Any]],
    ) -> None:
        owned = self.owned
        for where, value, entry in zip(placed, values, entries, strict=True):
            if where[1] >= 0 and (owned is None or where[0] in owned):
                self._entries[where] = (value, entry)
        excess = len(self._entries) - self.capacity
        if excess > 0:
            for key in list(islice(self._entries, excess)):
                del self._entries[key]

    def take(self, partition: int, offset: int, value: bytes | None) -> SinkLine | None:
        """The line of the record at ``partition``/``offset`` when its bytes are ``value``."""
        found = self._entries.pop((partition, offset), None)
        if found is None or found[0] != value:
            return None
        self.hits += 1
        return sink_line(found[1])
