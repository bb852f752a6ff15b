"""``escalations sink verify``: check each state directory against its recorded position.

The directory is read under a shared ``flock`` of its data file (the directory's lock: the
worker takes it exclusively for each write), so a write in progress is never seen half done.
The recorded position is the directory's position file merged with the position logs.
Whole lines past the recorded position are normal between checkpoints: they are
reported as *pending* (not yet checkpointed), not as a problem. A partial line there is a
torn write (a crash): the worker that owns the session completes or cuts it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from streams.errors import SinkCorruptionError
from streams.sink.files import FILE_NAME, FileSink
from streams.sink.position import SinkPosition

__all__ = ["KEYS", "SessionReport", "inspect_session", "verify_session"]

log = logging.getLogger(__name__)

KEYS: Final = ["ts", "kind", "goal_id", "intent", "summary", "confidence", "auto_proceed"]
LOCK_WAIT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class SessionReport:
    problems: list[str] = field(default_factory=list)
    pending_lines: int = 0  # whole entries past the recorded position (not yet checkpointed)
    pending_bytes: int = 0


def verify_session(sink: FileSink, session_id: str) -> list[str]:
    """What is wrong with one state directory (empty: its file matches its position)."""
    return inspect_session(sink, session_id).problems


def inspect_session(
    sink: FileSink, session_id: str, lock_wait_s: float = LOCK_WAIT_S
) -> SessionReport:
    """One state directory checked under a shared lock: problems, and what is pending."""
    directory = sink.directory(session_id)
    with _shared_lock(directory / FILE_NAME, lock_wait_s) as locked:
        if not locked:
            return SessionReport(
                [f"{directory}: its lock was held for more than {lock_wait_s:.0f}s; not checked"]
            )
        try:
            # Before its first checkpoint a session's lines are all pending; a file of another
            # program would be adopted by the worker.
            position = sink.recorded(session_id) or SinkPosition()
        except SinkCorruptionError as exc:
            return SessionReport([str(exc)])
        return _inspect(directory, position)


def _inspect(directory: Path, position: SinkPosition) -> SessionReport:
    data = directory / FILE_NAME
    content = data.read_bytes() if data.exists() else b""
    if len(content) < position.size:
        return SessionReport(
            [f"{data}: {len(content)} bytes but {position.size} recorded (data lost: rebuild it)"]
        )
    problems: list[str] = []
    good = content[: position.size]
    if good and not good.endswith(b"\n"):
        problems.append(f"{data}: the recorded bytes do not end with a newline")
    lines = good.split(b"\n")[:-1] if good else []
    if len(lines) != position.entries:
        problems.append(f"{data}: {len(lines)} lines but {position.entries} recorded")
    problems.extend(_entry_problems(data, lines, 1))
    tail = content[position.size :]
    whole = tail[: tail.rfind(b"\n") + 1]
    pending = whole.split(b"\n")[:-1] if whole else []
    if len(whole) < len(tail):
        problems.append(
            f"{data}: torn tail of {len(tail) - len(whole)} bytes past the recorded position "
            "(a crash mid-write: the worker that owns the session completes or cuts it)"
        )
    problems.extend(_entry_problems(data, pending, len(lines) + 1, " (pending)"))
    return SessionReport(problems, len(pending), len(whole))


def _entry_problems(data: Path, lines: list[bytes], first: int, note: str = "") -> list[str]:
    problems = []
    for number, line in enumerate(lines, first):
        try:
            obj = json.loads(line)
        except ValueError:
            problems.append(f"{data}: line {number}{note} is not JSON")
            continue
        if not isinstance(obj, dict) or list(obj) != KEYS:
            problems.append(f"{data}: line {number}{note} does not have the entry's keys in order")
    return problems


@contextmanager
def _shared_lock(path: Path, wait_s: float) -> Iterator[bool]:
    """A shared flock on ``path``, the file at the path once locked (none needed when there is
    none); False on timeout."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            yield True
            return
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.01)
            if _same_file(fd, path):
                yield True
                return
        finally:
            os.close(fd)
        # Replaced (rebuilt) while we waited: lock the new file.


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
