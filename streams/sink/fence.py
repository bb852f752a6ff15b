"""Fencing: a worker that lost an output partition never again writes its sessions or its log.

A worker paused (SIGSTOP, a long GC, a frozen VM) until the group gave its partitions to
another, then resumed, still holds its states and finishes the batch in hand before its
consumer learns of the rebalance. Kafka fences such a zombie by generation; the files need a
fence of their own.

Each output partition has an owner file, ``<state root>/.positions/<topic>-<partition>.owner``,
16 bytes: the token of the worker that was assigned it last (a random worker id and a count of
its assignments). On assignment a worker writes its token there *before* it recovers the
partition's sessions; it checks the token, through a shared mapping of the file (a memory
read, no system call), with a session's lock held, before every write to that session and
every append to that log. Either the zombie's check comes first, and its write ends before the
new owner's recovery can take the session's lock (the bytes are then a tail the new owner
compares with its replay), or the check sees the new token and the zombie stops
(``FencedError``), writing nothing. The tokens need no sync: a power loss leaves no zombie.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from streams.errors import SinkError
from streams.sink.fileio import FileLayer, write_all
from streams.sink.positionlog import LOG_DIR

__all__ = ["Fence", "FencedError"]

TOKEN_BYTES: Final = 16


class FencedError(SinkError):
    """Another worker was assigned the partition since: this one must stop, writing nothing."""


class Fence:
    """The owner tokens of the output partitions this worker was assigned last."""

    def __init__(self, files: FileLayer, root: Path) -> None:
        self.files = files
        self.dir = root / LOG_DIR
        self.worker = os.urandom(8)
        self.assignments = 0
        self.active = False  # False until the first claim (tools and tests without partitions)
        self._maps: dict[str, bytearray | mmap.mmap] = {}
        self._mine: dict[str, bytes] = {}

    def claim(self, partitions: Iterable[str]) -> None:
        """Takes the partitions (``topic:partition``): others' tokens are overwritten."""
        self.assignments += 1
        token = self.worker + self.assignments.to_bytes(8, "big")
        self._mine = {}
        for directory in (self.dir.parent, self.dir):
            if self.files.stat(directory) is None:
                self.files.mkdir(directory)
        for partition in sorted(partitions):
            fd = self.files.open(self._path(partition), create=True)
            try:
                write_all(self.files, fd, token, 0)
            finally:
                self.files.close(fd)
            self._mine[partition] = token
        self.active = True

    def check(self, partition: str) -> None:
        """Raises ``FencedError`` unless this worker is still the partition's last assignee."""
        if not self.active:
            return
        mine = self._mine.get(partition)
        view = self._maps.get(partition)
        if view is None and mine is not None:
            view = self._maps[partition] = self.files.map_shared(self._path(partition), TOKEN_BYTES)
        if mine is None or view is None or view[:TOKEN_BYTES] != mine:
            raise FencedError(
                f"output partition {partition} was assigned to another worker while this one "
                "was paused: stopping without writing (the new owner replays what was not "
                "committed)"
            )

    def release(self) -> None:
        """Unmaps the owner files (an idle worker keeps nothing of the volume open)."""
        maps, self._maps = self._maps, {}
        for view in maps.values():
            if isinstance(view, mmap.mmap):
                view.close()

    def _path(self, partition: str) -> Path:
        topic, _, number = partition.rpartition(":")
        return self.dir / f"{topic}-{number}.owner"
