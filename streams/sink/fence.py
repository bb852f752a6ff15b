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

import logging
import mmap
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from streams.errors import SinkError
from streams.sink.fileio import FileLayer, write_all
from streams.sink.positionlog import LOG_DIR, LOG_SUFFIX, log_name

__all__ = ["Fence", "FencedError"]

log = logging.getLogger(__name__)

TOKEN_BYTES: Final = 16


class FencedError(SinkError):
    """Another worker was assigned the partition since: this one must stop, writing nothing."""


class Fence:
    """The owner tokens of the output partitions this worker was assigned last."""

    def __init__(self, files: FileLayer, root: Path, created: set[Path]) -> None:
        self.files = files
        self.created = created  # directories whose entries the next log sync makes durable
        self.dir = root / LOG_DIR
        self.worker = os.urandom(8)
        self.assignments = 0
        self.active = False  # False until the first claim (tools and tests without partitions)
        self._maps: dict[str, bytearray | mmap.mmap | _Read] = {}
        self._mine: dict[str, bytes] = {}

    def claim(self, partitions: Iterable[str]) -> None:
        """Takes the partitions (``topic:partition``): others' tokens are overwritten."""
        self.assignments += 1
        token = self.worker + self.assignments.to_bytes(8, "big")
        self._mine = {}
        for directory in (self.dir.parent, self.dir):
            if self.files.stat(directory) is None and self.files.mkdir(directory):
                self.created.add(directory.parent)  # its entry synced with the logs
        for partition in sorted(partitions):
            fd = self.files.open(self._path(partition), create=True)
            try:
                write_all(self.files, fd, token, 0)
            finally:
                self.files.close(fd)
            self._mine[partition] = token
        self.active = True

    def owns(self, partition: str) -> bool:
        """Whether the partition was assigned to this worker at its last claim (all are, to
        tools and tests that claim none)."""
        return not self.active or partition in self._mine

    def check(self, partition: str) -> None:
        """Raises ``FencedError`` unless this worker is still the partition's last assignee."""
        if not self.active:
            return
        mine = self._mine.get(partition)
        view = self._maps.get(partition)
        if view is None and mine is not None:
            view = self._maps[partition] = self._map(self._path(partition))
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
            if isinstance(view, mmap.mmap | _Read):
                view.close()

    def _map(self, path: Path) -> bytearray | mmap.mmap | _Read:
        try:
            return self.files.map_shared(path, TOKEN_BYTES)
        except OSError as exc:  # ENODEV: a FUSE file system in direct-I/O mode maps nothing
            log.info("sink: cannot map %s (%s): reading it at each check instead", path, exc)
            return _Read(self.files, path)

    def _path(self, partition: str) -> Path:
        return self.dir / log_name(partition).replace(LOG_SUFFIX, ".owner")


class _Read:
    """An owner file read at each check (one ``pread``), where it cannot be mapped."""

    def __init__(self, files: FileLayer, path: Path) -> None:
        self.files = files
        self.fd = files.open(path, readonly=True)

    def __getitem__(self, part: slice) -> bytes:
        return self.files.pread(self.fd, part.stop, 0)

    def close(self) -> None:
        self.files.close(self.fd)
