"""The sink's file layer: every open, read, write, sync and lock of a state directory.

The sink does its file I/O through a :class:`FileLayer` (``OS_FILES`` in production), so a
test can run it over a model that records, per file, what was written and what a completed
``fdatasync``/``fsync``/``syncfs`` made durable, and crash it at any step
(``tests/unit/test_sink_crash_model.py``). The layer is deliberately small: descriptors,
positional reads and writes, the three syncs, ``flock``, ``mkdir`` and ``rename``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import mmap
import os
import resource
from collections.abc import Callable
from typing import Final, NamedTuple, Protocol, cast

__all__ = [
    "OS_FILES",
    "FileLayer",
    "FileStat",
    "OsFiles",
    "StrPath",
    "raise_open_file_limit",
    "read_all",
    "write_all",
]

log = logging.getLogger(__name__)

#: A path as the layer takes it: hot paths pass ``str`` (no ``pathlib`` on the write path).
StrPath = str | os.PathLike[str]


class FileStat(NamedTuple):
    """What the sink reads of a ``stat`` (a tuple: one is built for every write)."""

    identity: tuple[int, int]  # (st_dev, st_ino): which file a path or descriptor names
    size: int
    is_dir: bool = False


class FileLayer(Protocol):
    """What the sink needs of a file system (a port: ``OsFiles``, or a test's model)."""

    def open(self, path: StrPath, *, create: bool = False, readonly: bool = False) -> int:
        """A descriptor for reading (and, unless ``readonly``, writing) ``path``."""

    def open_dir(self, path: StrPath) -> int:
        """A descriptor of a directory (to sync it, or its whole file system)."""

    def close(self, fd: int) -> None: ...

    def dup(self, fd: int) -> int:
        """A second descriptor of the same open file (synced while the first may be closed)."""

    def pread(self, fd: int, size: int, offset: int) -> bytes: ...

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        """Bytes written (possibly fewer than given)."""

    def truncate(self, fd: int, size: int) -> None: ...

    def fstat(self, fd: int) -> FileStat: ...

    def stat(self, path: StrPath) -> FileStat | None:
        """None when nothing is at ``path``."""

    def datasync(self, fd: int) -> None:
        """``fdatasync``: the file's data (and its size) durable."""

    def fsync(self, fd: int) -> None:
        """``fsync``: of a directory, its entries durable."""

    def syncfs(self, fd: int) -> None:
        """``syncfs``: everything written to the file system of ``fd`` durable.

        Raises ``OSError(ENOSYS)`` where the platform has no ``syncfs``.
        """

    def mkdir(self, path: StrPath) -> bool:
        """Creates a directory; False when one was there already."""

    def replace(self, source: StrPath, target: StrPath) -> None:
        """``rename``: atomically puts ``source`` in place of ``target``."""

    def list_dirs(self, path: StrPath) -> list[str]:
        """Names of the directories in ``path``."""

    def list_files(self, path: StrPath) -> list[str]:
        """Names of the regular files in ``path``."""

    def lock(self, fd: int, *, exclusive: bool = True, blocking: bool = True) -> bool:
        """``flock``; False when ``blocking`` is False and another holder has it."""

    def map_shared(self, path: StrPath, size: int) -> bytearray | mmap.mmap:
        """The first ``size`` bytes of ``path`` mapped shared and read-only: what any process
        writes there is read at once, without a system call (not a writer of the volume: it
        may be remounted read-only)."""

    def unlock(self, fd: int) -> None: ...


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs`` (ctypes releases the GIL while it runs), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None
    function = getattr(libc, "syncfs", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return cast("Callable[[int], int]", function)


_SYNCFS: Final = _load_syncfs()
_DATASYNC: Final = getattr(os, "fdatasync", os.fsync)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)


class OsFiles:
    """The file layer over the operating system (``syncfs`` through ctypes, on Linux)."""

    def open(self, path: StrPath, *, create: bool = False, readonly: bool = False) -> int:
        flags = (os.O_RDONLY if readonly else os.O_RDWR) | _CLOEXEC
        if create:
            flags |= os.O_CREAT
        return os.open(path, flags, 0o644)

    def open_dir(self, path: StrPath) -> int:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)

    def close(self, fd: int) -> None:
        os.close(fd)

    def dup(self, fd: int) -> int:
        return os.dup(fd)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def fstat(self, fd: int) -> FileStat:
        st = os.fstat(fd)
        return FileStat((st.st_dev, st.st_ino), st.st_size, _is_dir(st.st_mode))

    def stat(self, path: StrPath) -> FileStat | None:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return FileStat((st.st_dev, st.st_ino), st.st_size, _is_dir(st.st_mode))

    def datasync(self, fd: int) -> None:
        _DATASYNC(fd)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def syncfs(self, fd: int) -> None:
        if _SYNCFS is None:
            raise OSError(errno.ENOSYS, "syncfs(2) is not available on this platform")
        if _SYNCFS(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs: {os.strerror(code)}")

    def mkdir(self, path: StrPath) -> bool:
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            if not os.path.isdir(path):
                raise
            return False
        return True

    def replace(self, source: StrPath, target: StrPath) -> None:
        os.replace(source, target)

    def list_dirs(self, path: StrPath) -> list[str]:
        with os.scandir(path) as entries:
            return [e.name for e in entries if e.is_dir()]

    def list_files(self, path: StrPath) -> list[str]:
        with os.scandir(path) as entries:
            return [e.name for e in entries if e.is_file()]

    def lock(self, fd: int, *, exclusive: bool = True, blocking: bool = True) -> bool:
        operation = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, operation if blocking else operation | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def unlock(self, fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

    def map_shared(self, path: StrPath, size: int) -> bytearray | mmap.mmap:
        fd = os.open(path, os.O_RDONLY | _CLOEXEC)
        try:
            return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)  # the mapping keeps the file


def _is_dir(mode: int) -> bool:
    return (mode & 0o170000) == 0o040000


OS_FILES: Final = OsFiles()


def write_all(files: FileLayer, fd: int, payload: bytes, offset: int) -> None:
    """``pwrite`` until every byte is written at ``offset``."""
    done = files.pwrite(fd, payload, offset)
    if done == len(payload):
        return  # the usual case: one call
    if done <= 0:
        raise OSError(errno.EIO, f"pwrite wrote {done} of {len(payload)} bytes")
    view, offset = memoryview(payload)[done:], offset + done
    while view:
        done = files.pwrite(fd, view, offset)
        if done <= 0:
            raise OSError(errno.EIO, f"pwrite wrote {done} of {len(view)} bytes")
        view, offset = view[done:], offset + done


def read_all(files: FileLayer, fd: int, offset: int = 0) -> bytes:
    """The file's bytes from ``offset`` to its end."""
    size = files.fstat(fd).size
    chunks, at = [], offset
    while at < size:
        chunk = files.pread(fd, size - at, at)
        if not chunk:
            break
        chunks.append(chunk)
        at += len(chunk)
    return b"".join(chunks)


#: Descriptors left to the rest of the worker (sockets, Faust, logs) beside the sink's.
RESERVED_DESCRIPTORS: Final = 256


def raise_open_file_limit(wanted: int) -> int:
    """Raises the soft ``RLIMIT_NOFILE`` so ``wanted`` sink descriptors fit beside the rest of
    the worker; returns how many the sink may keep open (fewer when the hard limit is low)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + RESERVED_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("sink: cannot raise the open-file limit to %d: %s", target, exc)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    usable = max(16, soft - RESERVED_DESCRIPTORS)
    log.warning(
        "sink: ESCALATIONS_MAX_OPEN_FILES=%d does not fit the open-file limit %d: "
        "keeping at most %d sink files open",
        wanted,
        soft,
        usable,
    )
    return usable
