"""``escalations sink rebuild``'s replacement of a session's file, beside running workers.

The new file is written and synced under a temporary name with a fresh *epoch* (so the position
logs' entries about the file replaced never describe it), its position file is written, and it
is renamed over the old one while the old file's lock (the directory's) is held; a worker
notices the new file under the lock and reloads it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from streams.core.records import SinkLine
from streams.errors import SinkCorruptionError, SinkError
from streams.sink.fileio import FileLayer, read_all, write_all
from streams.sink.files import FileSink
from streams.sink.position import SinkPosition, write_position
from streams.sink.positionlog import new_epoch
from streams.sink.sessions import FILE_NAME, LOCK_NAME, RELOADS
from streams.sink.state import advance, fresh_lines

__all__ = ["replace_locked", "replace_session"]


def replace_session(sink: FileSink, session_id: str, lines: list[SinkLine]) -> SinkPosition | None:
    """Rewrite a session's file from scratch with ``lines`` (``escalations sink rebuild``).

    ``lines`` must hold every entry of the session in output-topic order; repeats are
    dropped as the sink drops them. Atomic: readers see the old file or the new one.
    Returns None, changing nothing, when the file holds more than ``lines`` explain: a
    recorded offset past them, or bytes past the recorded position (lines a worker wrote
    and has not checkpointed yet) that are not where ``lines`` put them (read more and try
    again). A worker notices the new file under the lock and reloads it.
    """
    directory = sink.directory(session_id)
    files = sink.files
    with sink.lock:
        if files.stat(sink.root) is None:
            files.mkdir(sink.root)
        files.mkdir(directory)
        sink.forget(session_id)  # no descriptor of ours stays on the file replaced
        locks = _lock_for_replace(files, directory)
        try:
            position = replace_locked(sink, directory, lines)
        finally:
            for fd in reversed(locks):
                files.close(fd)
        if position is None:
            return None
        sink.forget(session_id)
        sink.views.seen(session_id, position)
        sink.views.healthy(session_id)
        return position


def _lock_for_replace(files: FileLayer, directory: Path) -> list[int]:
    """Locks the directory for a replacement: the lock file of earlier versions where it
    exists (an earlier worker may run during an upgrade), then the data file, checked to
    still be the file at its path once locked. Returns the descriptors (closing unlocks)."""
    held: list[int] = []
    try:
        try:
            legacy = files.open(directory / LOCK_NAME)
        except FileNotFoundError:
            pass
        else:
            held.append(legacy)
            files.lock(legacy)
        for _ in range(RELOADS):
            fd = files.open(directory / FILE_NAME, create=True)
            files.lock(fd)
            st = files.stat(directory / FILE_NAME)
            if st is not None and st.identity == files.fstat(fd).identity:
                held.append(fd)
                return held
            files.close(fd)  # replaced meanwhile: lock the new one
        raise SinkError(f"{directory / FILE_NAME} keeps being replaced")
    except BaseException:
        for fd in held:
            files.close(fd)
        raise


def replace_locked(sink: FileSink, directory: Path, lines: list[SinkLine]) -> SinkPosition | None:
    files = sink.files
    fresh = fresh_lines(SinkPosition(), lines)
    payload = b"".join(item.line for item in fresh)
    position = advance(SinkPosition(), fresh, len(payload)) if fresh else SinkPosition()
    sink.logs.refresh()
    try:
        recorded = sink.logs.recorded(directory.name, directory) or SinkPosition()
    except SinkCorruptionError:
        recorded = SinkPosition()  # an unreadable position file: the lines decide
    if any(o > position.offsets.get(s, -1) for s, o in recorded.offsets.items()):
        return None
    current = b""
    try:
        fd = files.open(directory / FILE_NAME, readonly=True)
    except FileNotFoundError:
        pass
    else:
        try:
            current = read_all(files, fd)
        finally:
            files.close(fd)
    if len(current) > recorded.size and not payload.startswith(current):
        return None  # lines past the record that these lines do not explain
    # A new epoch: what the logs hold of the file replaced never describes this one.
    position = dataclasses.replace(position, seq=recorded.seq + 1, epoch=new_epoch())
    tmp = directory / (FILE_NAME + ".rebuild")
    fd = files.open(tmp, create=True)
    try:
        files.truncate(fd, 0)
        write_all(files, fd, payload, 0)
        files.datasync(fd)
    finally:
        files.close(fd)
    # Position first (a bigger size than the old file is never "torn"), then the file.
    write_position(files, directory, position)
    files.replace(tmp, directory / FILE_NAME)
    dir_fd = files.open_dir(directory)
    try:
        files.fsync(dir_fd)
    finally:
        files.close(dir_fd)
    return position
