"""What the sink knows of one state directory between checkpoints, and the pure rules on it.

``position`` is what this worker knows the file holds: its first ``position.size`` bytes are
the session's lines up to ``position.offsets`` (written, durable or not). ``recorded`` is the
last position recorded (in the position logs, or the directory's position file; ``seq`` counts
the records). ``tail`` counts
bytes past ``position.size`` that are not known to be ours yet: a torn or unrecorded tail
found on recovery, or lines another writer appended. Fresh lines are compared with the tail
and written over it; the file is cut only at the first byte that differs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from streams.core.records import SinkLine
from streams.sink.position import SinkPosition

__all__ = [
    "FILE_NAME",
    "LOCK_NAME",
    "SessionState",
    "Tail",
    "advance",
    "first_difference",
    "fresh_lines",
]


class Tail(enum.Enum):
    """Where the bytes past ``position.size`` came from."""

    NONE = "none"
    #: Found on recovery past the recorded position: lines written before a crash (the
    #: replay writes them again, identically) or a torn write. Cut once the replay has
    #: caught up without reproducing them.
    RECOVERED = "recovered"
    #: Appended by another writer while this worker held the session: compared, never cut
    #: for being unexplained.
    FOREIGN = "foreign"
    #: A file without a recorded position: this sink's, after a power loss before its first
    #: checkpoint, or another program's (adopted: its whole lines kept).
    UNOWNED = "unowned"


#: The data file of a state directory. Its ``flock`` is the directory's lock: the protocol
#: every process that changes the directory follows (the sink, ``sink rebuild``, ``sink
#: verify``); whoever replaces the file does it under the old file's lock, and whoever locks
#: it checks it is still the file at the path.
FILE_NAME: Final = "pending_escalations.jsonl"
#: The lock file of earlier versions: ``sink rebuild`` still takes it where it exists, so a
#: worker of an earlier version running during an upgrade is kept out too.
LOCK_NAME: Final = ".lock"


@dataclass(slots=True, eq=False)
class SessionState:
    name: str
    directory: Path
    position: SinkPosition = field(default_factory=SinkPosition)
    recorded: SinkPosition = field(default_factory=SinkPosition)
    tail: int = 0
    tail_kind: Tail = Tail.NONE
    #: (dev, inode) of the data file when last seen; None: there was none.
    identity: tuple[int, int] | None = None
    #: False until the directory has been read under its lock (first use, or after a
    #: replacement): until then nothing above is known.
    loaded: bool = False
    #: A different file was found at the path (not a rebuild's): the reload takes it as is.
    replaced: bool = False
    #: Monotonic time of the first write not yet checkpointed; None: nothing to record.
    dirty_since: float | None = None
    #: Counts the loads of the directory: a checkpoint records what it saw only if the files
    #: were not reloaded (replaced by a rebuild) since.
    generation: int = 0
    #: The output partition (``topic:partition``) of the last line written: the position log
    #: that records the session.
    source: str = ""
    #: Changes to the data file (writes, cuts) so far, and how many of them an ``fdatasync``
    #: made durable: equal when nothing waits for a per-file sync (see ``durability``).
    changes: int = 0
    synced_changes: int = 0
    #: Whether this worker made the directory's entries durable (its own, and its file's):
    #: a directory another process made may never have been synced (see ``durability``).
    entries_synced: bool = False
    #: Open descriptors (-1: closed), owned by the sink's descriptor cache.
    data_fd: int = -1  # locked while the directory is in use
    dir_path: str = field(init=False)

    def __post_init__(self) -> None:
        self.dir_path = str(self.directory)

    # Built when used, not kept: a worker may hold a state for each of 100,000 sessions.
    @property
    def data_path(self) -> str:
        return f"{self.dir_path}/{FILE_NAME}"

    @property
    def expected_size(self) -> int:
        """The data file's size as this worker knows it."""
        return self.position.size + self.tail

    @property
    def dirty(self) -> bool:
        return self.dirty_since is not None


def fresh_lines(position: SinkPosition, items: Iterable[SinkLine]) -> list[SinkLine]:
    """The items past the position's offsets (each source partition tracked on its own)."""
    offsets = position.offsets
    last: dict[str, int] = {}
    fresh: list[SinkLine] = []
    for item in items:
        source = item.source
        seen = last.get(source)
        if seen is None:
            seen = offsets.get(source, -1)
        if item.offset > seen:
            last[source] = item.offset
            fresh.append(item)
    return fresh


def advance(
    position: SinkPosition, fresh: list[SinkLine], payload_size: int, seq: int | None = None
) -> SinkPosition:
    """The position once ``fresh`` (``payload_size`` bytes) follows it in the file (``seq``:
    the number its record will have; the position's own by default)."""
    offsets = dict(position.offsets)
    for item in fresh:
        offsets[item.source] = item.offset
    return SinkPosition(
        size=position.size + payload_size,
        entries=position.entries + len(fresh),
        offsets=offsets,
        last_ts_us=fresh[-1].ts_us,
        seq=position.seq if seq is None else seq,
        epoch=position.epoch,
    )


def first_difference(existing: bytes, payload: bytes) -> int:
    """How many leading bytes ``existing`` and ``payload`` share."""
    n = min(len(existing), len(payload))
    if existing[:n] == payload[:n]:
        return n
    lo, hi = 0, n  # existing[:lo] == payload[:lo] and existing[:hi] != payload[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if existing[lo:mid] == payload[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo
