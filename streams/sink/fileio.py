"""The sink's file layer: every open, read, write, sync and lock of a state directory.

The sink does its file I/O through a :class:`FileLayer` (``OS_FILES`` in production), so a
test can run it over a model that records, per file, what was written and what a completed
``fdatasync``/``fsync``/``syncfs`` made durable, and crash it at any step
(``tests/unit/test_sink_crash_model.py``). The layer is deliberately small: descriptors,
positional reads and writes, the three syncs, ``flock``, ``mkdir`` and ``rename``.

Links are never followed: ``OsFiles`` opens with ``openat2(RESOLVE_NO_SYMLINKS)`` (Linux 5.6+;
elsewhere ``O_NOFOLLOW`` and a check of the parent), so a session directory or file that a
reader replaced by a symbolic link is refused (``LinkRefused``) instead of leading the sink out
of the state root (whose own path is resolved once, at start).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import mmap
import os
import platform
import resource
from collections.abc import Callable
from typing import Final, NamedTuple, Protocol, cast

from streams.errors import SinkCorruptionError

__all__ = [
    "OS_FILES",
    "FileLayer",
    "FileStat",
    "LinkRefused",
    "OsFiles",
    "StrPath",
    "raise_open_file_limit",
    "read_all",
    "write_all",
]

log = logging.getLogger(__name__)

#: A path as the layer takes it: hot paths pass ``str`` (no ``pathlib`` on the write path).
StrPath = str | os.PathLike[str]


class LinkRefused(SinkCorruptionError):
    """A symbolic link where the sink expects a file or directory of the state root."""

    def __init__(self, path: StrPath) -> None:
        super().__init__(
            f"{path}: a symbolic link on the way, refused (the sink never follows links out "
            "of the state root); remove the link to let the session carry on"
        )


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


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


#: ``openat2``'s number where the kernel's tables share it (x86-64, arm64); RESOLVE_NO_SYMLINKS.
_SYS_OPENAT2: Final = {"x86_64": 437, "aarch64": 437}.get(platform.machine())
_RESOLVE_NO_SYMLINKS: Final = 0x04
_AT_FDCWD: Final = -100


def _load_openat2() -> Callable[..., int] | None:
    """libc's ``syscall`` for ``openat2``, or None where the kernel lacks it (before 5.6)."""
    if _SYS_OPENAT2 is None or not hasattr(os, "O_NOFOLLOW"):
        return None
    try:
        call = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    call.restype = ctypes.c_long
    how = _OpenHow(os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, 0, _RESOLVE_NO_SYMLINKS)
    fd = call(_SYS_OPENAT2, _AT_FDCWD, b"/", ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        return None
    os.close(fd)
    return cast("Callable[..., int]", call)


#: ``openat2``'s argument per (flags, mode), built once (a hot path: every open of the sink).
_HOWS: dict[tuple[int, int], object] = {}


def _open_no_links(path: StrPath, flags: int, mode: int) -> int:
    """``open`` refusing a symbolic link in any component of ``path`` (``LinkRefused``)."""
    raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else os.fsencode(path)
    if _OPENAT2 is not None:
        how = _HOWS.get((flags, mode))
        if how is None:
            made = _OpenHow(flags, mode if flags & os.O_CREAT else 0, _RESOLVE_NO_SYMLINKS)
            how = _HOWS[(flags, mode)] = ctypes.byref(made)  # keeps ``made`` alive
        fd = _OPENAT2(_SYS_OPENAT2, _AT_FDCWD, raw, how, ctypes.sizeof(_OpenHow))
        if fd >= 0:
            return fd
        code = ctypes.get_errno()
        if code == errno.ELOOP:
            raise LinkRefused(path)
        raise OSError(code, os.strerror(code), os.fsdecode(raw))
    if os.path.islink(os.path.dirname(raw)):
        raise LinkRefused(path)
    try:
        return os.open(raw, flags | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LinkRefused(path) from None
        raise


_SYNCFS: Final = _load_syncfs()
_OPENAT2: Final = _load_openat2()
_DATASYNC: Final = getattr(os, "fdatasync", os.fsync)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)


class OsFiles:
    """The file layer over the operating system (``syncfs`` through ctypes, on Linux)."""

    def open(self, path: StrPath, *, create: bool = False, readonly: bool = False) -> int:
        flags = (os.O_RDONLY if readonly else os.O_RDWR) | _CLOEXEC
        if create:
            flags |= os.O_CREAT
        return _open_no_links(path, flags, 0o644)

    def open_dir(self, path: StrPath) -> int:
        return _open_no_links(path, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC, 0)

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
            st = os.stat(path, follow_symlinks=False)
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
            return [e.name for e in entries if e.is_dir(follow_symlinks=False)]

    def list_files(self, path: StrPath) -> list[str]:
        with os.scandir(path) as entries:
            return [e.name for e in entries if e.is_file(follow_symlinks=False)]

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
        fd = _open_no_links(path, os.O_RDONLY | _CLOEXEC, 0)
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
